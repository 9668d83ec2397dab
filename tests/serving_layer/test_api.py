"""The REST API over real tables: lookups, predictions, scoring now, auth, and no SQL from callers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from batch_layer.views import recompute_views
from lambdaflow import producer, registry
from lambdaflow.config import ServingConfig
from lambdaflow.features import FeatureFunction
from lambdaflow.sample_data import generate
from serving_layer.api import create_app
from serving_layer.engine import open_session
from tests.conftest import SpeedEnv, make_env
from tests.serving_layer.test_serving import shifted
from tests.speed_layer.test_speed_layer import drain, send


def promote_a_model(env: SpeedEnv, tmp_path) -> int:
    import xgboost as xgb

    names = FeatureFunction(env.settings.pipeline).names
    rng = np.random.default_rng(1)
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(rng.normal(size=(300, len(names))), rng.integers(0, 2, 300)), 5)
    path = tmp_path / registry.BOOSTER_FILE
    booster.save_model(str(path))
    c = registry.client(env.settings)
    version = registry.register(env.settings, c.create_run(registry.experiment_id(env.settings)).info.run_id, path, names, 0, {})
    registry.promote(env.settings, version)
    return version


@pytest.fixture(scope="module")
def served(broker, spark, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("api")
    speed_env = make_env(tmp_path, broker)
    sample = generate(3000, days=3, seed=41).events
    send(speed_env, sample.slice(0, 2000))
    drain(speed_env, idle=3)
    recompute_views(speed_env.settings, spark)
    send(speed_env, sample.slice(2000))
    drain(speed_env, idle=3)
    version = promote_a_model(speed_env, tmp_path)
    return speed_env, sample, version


def test_lookups_predictions_and_scoring(served) -> None:
    env, sample, version = served
    client = TestClient(create_app(env.settings))
    assert client.get("/health").json()["status"] == "ok"
    account = sample["account_id"][0].as_py()
    body = client.get(f"/views/account_profile/{account}").json()
    want = open_session(env.settings).query(f"SELECT * FROM unified_account_profile WHERE account_id = '{account}'").to_pylist()[0]
    assert body["rows"][0]["txn_count"] == want["txn_count"]
    assert body["batch_watermark"] >= 1 and body["freshest_ingest_seq"] > body["batch_watermark"]
    hourly = client.get(f"/views/account_hourly/{account}").json()["rows"]
    assert sum(r["txn_count"] for r in hourly) == want["txn_count"]
    event_id = sample["event_id"][5].as_py()
    prediction = client.get(f"/predictions/{event_id}").json()
    assert prediction["event_id"] == event_id and set(prediction["features"]) == set(FeatureFunction(env.settings.pipeline).names)
    fresh = shifted(sample.slice(0, 1), 24 * 5, "api-").to_pylist()[0]
    scored = client.post("/score", content=producer.encode_row(fresh))
    assert scored.status_code == 200, scored.text
    result = scored.json()
    assert result["model_version"] == version and 0 <= result["score"] <= 1
    assert result["features"]["lifetime_count"] == want["txn_count"]  # the key's whole history is its state
    assert "lambdaflow_api_requests_total" in client.get("/metrics").text


def test_bad_input_is_refused_clearly(served) -> None:
    env, sample, _ = served
    client = TestClient(create_app(env.settings))
    assert client.get("/views/nope/x").status_code == 404
    injection = client.get("/views/account_profile/x' OR '1'='1")
    assert injection.status_code == 404  # bound as a value: matches nothing
    bad = client.post("/score", content=json.dumps({"event_id": "x"}))
    assert bad.status_code == 422 and "missing field(s)" in bad.json()["detail"]
    assert client.post("/score", content=b"\xff").status_code == 422
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/views/{view}/{key}", "/predictions/{event_id}", "/score", "/health", "/metrics"} <= set(paths)


def test_bearer_token(served) -> None:
    env, sample, _ = served
    profile = env.settings.profile.model_copy(update={"serving": ServingConfig(token="s3cret")})
    client = TestClient(create_app(env.settings.model_copy(update={"profile": profile})))
    account = sample["account_id"][0].as_py()
    assert client.get("/health").status_code == 200
    assert client.get(f"/views/account_profile/{account}").status_code == 401
    assert client.get(f"/views/account_profile/{account}", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get(f"/views/account_profile/{account}", headers={"Authorization": "Bearer s3cret"}).status_code == 200
