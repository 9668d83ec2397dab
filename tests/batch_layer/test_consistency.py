"""Online/offline consistency on the real stack: vectors served by the API and scored by the speed layer, recomputed
by the training-set code (Spark over master), measured per feature, and a skewed serving feature caught."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from batch_layer.consistency import METRICS_FILE, check_consistency
from batch_layer.views import recompute_views
from lambdaflow import producer
from lambdaflow.config import PipelineConfig
from lambdaflow.contracts.paths import local_home
from lambdaflow.sample_data import generate
from serving_layer.api import create_app
from serving_layer.engine import open_session
from serving_layer.lookups import query_fields
from tests.conftest import make_env
from tests.serving_layer.test_api import promote_a_model
from tests.serving_layer.test_serving import shifted
from tests.speed_layer.test_speed_layer import drain, send


def _logging(settings, pipeline: PipelineConfig | None = None):
    """``settings`` with every served vector logged (and, for a skewed API, another pipeline)."""
    # every vector, flushed by the test only (not by the background thread half-way)
    serving = settings.profile.serving.model_copy(update={"feature_log_sample": 1.0, "feature_log_flush_seconds": 3600.0})
    profile = settings.profile.model_copy(update={"serving": serving})
    return settings.model_copy(update={"profile": profile, "pipeline": pipeline or settings.pipeline})


def _serve(settings, sample, start: int, count: int) -> tuple[int, int]:
    """Ask /features (with event fields), POST /features and /score for ``count`` fresh events; flush the log.

    Returns: the rows logged, and the distinct accounts the batch form asked for.
    """
    app = create_app(settings)
    client = TestClient(app)
    fresh = shifted(sample.slice(start, count), 2, f"probe{start}-").to_pylist()
    for row in fresh:
        assert client.get(f"/features/{row['account_id']}", params=query_fields(settings.pipeline, row)).status_code == 200
    keys = [r["account_id"] for r in fresh]
    assert client.post("/features", json={"keys": keys, "at": fresh[0]["event_time"].isoformat()}).status_code == 200
    for row in fresh[:10]:
        assert client.post("/score", content=producer.encode_row(row)).status_code == 200
    return app.state.feature_log.flush(), len(set(keys))


@pytest.fixture(scope="module")
def ingested(kafka, spark, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("consistency")
    env = make_env(tmp_path, kafka)
    sample = generate(3000, days=3, seed=47).events
    send(env, sample.slice(0, 2000))
    drain(env, idle=3)
    recompute_views(env.settings, spark)
    send(env, sample.slice(2000))
    drain(env, idle=3)
    promote_a_model(env, tmp_path)
    return env, sample


def test_served_vectors_equal_their_offline_recompute(ingested, spark) -> None:
    env, sample = ingested
    settings = _logging(env.settings)
    logged, accounts = _serve(settings, sample, 0, 40)
    assert logged == 40 + accounts + 10  # every vector: /features one by one, the batch form, /score
    report = check_consistency(settings, spark, sample=0.25)
    assert report.compared["features"] == 40 + accounts and report.compared["score"] == 10
    assert report.compared["predictions"] > 500  # a quarter of 3,000 scored events, by hash
    assert report.mismatches == 0, {s: {f: r for f, r in res.items() if r["mismatches"]} for s, res in report.results.items()}
    # the merchant's features are part of it, with history to get right
    assert report.results["features"]["merchant_txn_count_1d"]["compared"] == 40 + accounts
    rows = open_session(settings).query('SELECT * FROM "feature_consistency" ORDER BY "source", "feature"').to_pylist()
    assert {r["source"] for r in rows} == {"features", "score", "predictions"} and all(r["mismatches"] == 0 for r in rows)
    assert report.plot is not None
    metrics = (local_home(settings.profile) / METRICS_FILE).read_text()
    assert 'lambdaflow_feature_consistency_mismatch_rate{source="features",feature="txn_count_24h"} 0.0' in metrics


def test_a_feature_skewed_at_serving_time_is_reported(ingested, spark) -> None:
    """The API computes txn_count_24h over 1 h (a serving-side bug); the check names that feature and no other."""
    env, sample = ingested
    data = env.settings.pipeline.model_dump(mode="json", by_alias=True, exclude_none=True)
    for feature in data["features"]:
        if feature["name"] == "txn_count_24h":
            feature["window"] = "1h"
    skewed = PipelineConfig.model_validate(data)
    _serve(_logging(env.settings, skewed), sample, 100, 40)
    report = check_consistency(env.settings, spark, sample=0.05)
    features = report.results["features"]
    assert features["txn_count_24h"]["mismatches"] > 0, features["txn_count_24h"]
    assert features["txn_count_24h"]["mean_relative_error"] > 0
    assert {name for name, r in features.items() if r["mismatches"]} == {"txn_count_24h"}
    assert np.isclose(report.results["predictions"]["txn_count_24h"]["mismatch_rate"], 0.0)  # the speed layer is not skewed
