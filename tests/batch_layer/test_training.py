"""Point-in-time training sets and the train → register → promote cycle, on real Spark, Delta and MLflow."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from batch_layer.train import train
from batch_layer.training import build_training_set
from lambdaflow import registry
from lambdaflow.config import LocalStorage
from lambdaflow.contracts.batch import LABEL
from lambdaflow.contracts.master import events_table, labels_table, to_label_rows, to_master_rows
from lambdaflow.contracts.paths import TRAINING_SET, local_path, table_uri
from lambdaflow.sample_data import LABEL_SCHEMA, generate
from lambdaflow.tables import Table
from tests.lambdaflow.test_features import brute_force

UTC = dt.timezone.utc


@pytest.fixture
def local(settings, tmp_path: Path):
    profile = settings.profile.model_copy(update={"storage": LocalStorage(kind="local", root=str(tmp_path))})
    return settings.model_copy(update={"profile": profile})


def test_training_set_has_no_future_events_and_no_late_labels(local, spark) -> None:
    events = generate(1200, days=20, seed=17, accounts=15).events
    n = events.num_rows
    offsets = pa.array(np.arange(n), pa.int64())
    events_table(local).append(to_master_rows(events, local.pipeline.events, 1, pa.array(np.zeros(n, np.int32)), offsets))
    start = events["event_time"][0].as_py()
    cutoff = start + dt.timedelta(days=18)
    early = events.slice(0, 300)
    known = early["event_id"].to_pylist()[0:300:10]  # labels that arrived before the cut-off
    late = early["event_id"].to_pylist()[5:300:10]  # labels that arrive after it
    rows = [{"event_id": e, "account_id": "x", "is_fraud": True, "reported_at": cutoff - dt.timedelta(hours=1)} for e in known]
    rows += [{"event_id": e, "account_id": "x", "is_fraud": True, "reported_at": cutoff + dt.timedelta(hours=1)} for e in late]
    labels_table(local).append(to_label_rows(pa.Table.from_pylist(rows, schema=LABEL_SCHEMA), local.pipeline.labels, 1))

    report = build_training_set(local, spark, cutoff=cutoff)
    ts = Table(table_uri(local.profile, TRAINING_SET)).snapshot().to_arrow().to_pylist()
    mature = cutoff - dt.timedelta(seconds=local.pipeline.labels.maturity)
    assert ts and all(r["event_time"] <= mature for r in ts)  # only events old enough to have a known label
    assert report.rows == len(ts) == sum(1 for t in events["event_time"].to_pylist() if t <= mature)
    by_id = {r["event_id"]: r for r in ts}
    assert all(by_id[e][LABEL] == 1 for e in known if e in by_id)
    assert all(by_id[e][LABEL] == 0 for e in late if e in by_id)  # arrived after the cut-off: unknown, so negative
    assert sum(r[LABEL] for r in ts) == sum(1 for e in known if e in by_id)
    # features only from events of the same key strictly before, in partition order
    plain = [{**r, "event_time": int(r["event_time"].timestamp() * 1e6)} for r in events.to_pylist()]
    index = {r["event_id"]: i for i, r in enumerate(plain)}
    for row in ts[::9]:
        want = brute_force(plain, index[row["event_id"]])
        for name, value in want.items():
            assert np.isclose(row[name], value, equal_nan=True, rtol=1e-9), (name, row[name], value)


def test_worse_model_is_registered_but_not_promoted(local, spark) -> None:
    sample = generate(40_000, days=30, seed=5)
    events_table(local).append(to_master_rows(sample.events, local.pipeline.events, 1))
    labels_table(local).append(to_label_rows(sample.labels, local.pipeline.labels, 1))
    build_training_set(local, spark)

    first = train(local, spark)
    assert first.promoted, first.reason
    assert first.metrics["roc_auc"] > 0.85 and first.metrics["pr_auc"] > 5 * first.positive_rate
    assert "baseline" in first.reason
    assert registry.champion_version(local) == first.version
    assert Path(first.plot).stat().st_size > 10_000

    worse = train(local, spark, shuffle_labels=True)
    assert not worse.promoted and worse.version == first.version + 1
    assert f"champion v{first.version}" in worse.reason
    assert worse.champion_metrics["pr_auc"] == pytest.approx(first.metrics["pr_auc"], rel=1e-9)  # same holdout
    assert registry.champion_version(local) == first.version

    champion = registry.load_champion(local)
    assert champion.version == first.version and champion.features == [f.name for f in local.pipeline.features]
    run = registry.client(local).get_run(first.run_id)
    assert run.data.metrics["roc_auc"] == pytest.approx(first.metrics["roc_auc"])
    assert run.data.params["model_sha256"] == champion.checksum


def test_tampered_champion_is_refused(local, spark) -> None:
    sample = generate(20_000, days=30, seed=6)
    events_table(local).append(to_master_rows(sample.events, local.pipeline.events, 1))
    labels_table(local).append(to_label_rows(sample.labels, local.pipeline.labels, 1))
    build_training_set(local, spark)
    report = train(local, spark)
    assert report.promoted
    booster = next(local_path(local.profile.storage.uri).rglob(registry.BOOSTER_FILE))
    booster.write_bytes(booster.read_bytes()[:-16] + b"\0" * 16)
    with pytest.raises(registry.ModelVerificationError, match="checksum"):
        registry.load_champion(local)


def test_one_outlier_timestamp_does_not_move_the_cutoff(local, spark) -> None:
    """Regression: the cut-off was the largest event time, so one event dated 2099 made every unlabelled event mature."""
    events = generate(600, days=20, seed=71).events
    outlier = events.slice(0, 1).set_column(
        events.schema.get_field_index("event_time"),
        "event_time",
        pa.array([dt.datetime(2099, 1, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
    )
    outlier = outlier.set_column(events.schema.get_field_index("event_id"), "event_id", pa.array(["from-2099"]))
    ingested = dt.datetime.now(UTC)
    events_table(local).append(to_master_rows(pa.concat_tables([events, outlier]), local.pipeline.events, 1, ingested_at=ingested))
    labels_table(local).append(to_label_rows(pa.Table.from_pylist([], schema=LABEL_SCHEMA), local.pipeline.labels, 1))
    report = build_training_set(local, spark)
    cutoff = dt.datetime.fromisoformat(report.cutoff)
    assert abs((cutoff - ingested).total_seconds()) < 1  # the snapshot's ingest time, not 2099
    mature_before = cutoff - dt.timedelta(seconds=local.pipeline.labels.maturity)
    times = pa.array(events["event_time"]).to_pylist()
    assert report.rows == sum(t <= mature_before for t in times)  # only events older than the label maturity
