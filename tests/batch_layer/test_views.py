"""Batch views recomputed by Spark from a master snapshot: exact, deterministic, incremental in effect."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from batch_layer.cycle import maintain
from batch_layer.views import recompute_views
from lambdaflow.config import LocalStorage
from lambdaflow.contracts.batch import batch_watermark
from lambdaflow.contracts.commits import WATERMARK_KEY
from lambdaflow.contracts.master import events_table, to_master_rows
from lambdaflow.contracts.paths import batch_view, table_uri
from lambdaflow.contracts.speed import SpeedTables
from lambdaflow.sample_data import generate
from lambdaflow.schemas import BATCH_WATERMARK
from lambdaflow.tables import Table, TableMissingError
from lambdaflow.views import compile_views


@pytest.fixture
def local(settings, tmp_path: Path):
    profile = settings.profile.model_copy(update={"storage": LocalStorage(kind="local", root=str(tmp_path))})
    return settings.model_copy(update={"profile": profile})


def ingest(settings, events: pa.Table, seq: int) -> None:
    events_table(settings).append(to_master_rows(events, settings.pipeline.events, seq))


def batch_rows(settings, view: str) -> list[dict]:
    table = Table(table_uri(settings.profile, batch_view(view))).snapshot().to_arrow()
    return sorted(table.to_pylist(), key=lambda r: tuple(str(v) for v in r.values()))


def test_missing_master_is_a_clear_error(local, spark) -> None:
    with pytest.raises(TableMissingError, match="ingest events with the speed layer first"):
        recompute_views(local, spark)


def test_views_match_the_arrow_compiler_and_dedupe(local, spark) -> None:
    events = generate(3000, days=3, seed=21).events
    ingest(local, events.slice(0, 1500), 1)
    ingest(local, events.slice(1500), 2)
    ingest(local, events.slice(100, 40), 3)  # a producer re-delivered 40 events
    report = recompute_views(local, spark)
    assert report.watermark == 3 and report.events == 3000 and report.duplicates_removed == 40
    for name, view in compile_views(local.pipeline).items():
        table = Table(table_uri(local.profile, batch_view(name)))
        assert batch_watermark(table.snapshot()) == 3
        snap = table.snapshot().to_arrow()
        assert pc.all(pc.equal(snap[BATCH_WATERMARK], 3)).as_py()
        got = view.finalize_arrow(snap.drop_columns([BATCH_WATERMARK]))
        want = view.finalize_arrow(view.partials_arrow(events))
        key = [(c, "ascending") for c in view.group_columns]
        got, want = got.sort_by(key), want.sort_by(key)
        assert got.num_rows == want.num_rows == report.views[name].rows
        for column in want.column_names:
            g, w = got[column].to_pylist(), want[column].to_pylist()
            if pa.types.is_floating(want.schema.field(column).type):
                assert all((a is None and b is None) or abs(a - b) <= 1e-6 * max(1, abs(b)) for a, b in zip(g, w)), column
            else:
                assert g == w, column


def test_recompute_twice_is_identical_and_skips_when_done(local, spark) -> None:
    ingest(local, generate(2000, days=2, seed=3).events, 1)
    recompute_views(local, spark)
    first = {name: batch_rows(local, name) for name in compile_views(local.pipeline)}
    again = recompute_views(local, spark)
    assert all(r.skipped for r in again.views.values())
    forced = recompute_views(local, spark, force=True)
    assert not any(r.skipped for r in forced.views.values())
    assert {name: batch_rows(local, name) for name in first} == first


def test_new_events_change_exactly_the_affected_keys(local, spark) -> None:
    sample = generate(4000, days=4, seed=8).events
    base, extra = sample.slice(0, 3600), sample.slice(3600)
    # the new batch only touches a handful of accounts, including late events (old event times)
    touched = extra["account_id"].unique().to_pylist()[:5]
    extra = extra.filter(pc.is_in(extra["account_id"], pa.array(touched)))
    late = base.filter(pc.is_in(base["account_id"], pa.array(touched))).slice(0, 3)
    late = late.set_column(0, "event_id", pa.array([f"late-{i}" for i in range(late.num_rows)]))
    ingest(local, base, 1)
    recompute_views(local, spark)
    before = batch_rows(local, "account_profile"), batch_rows(local, "account_hourly")
    ingest(local, pa.concat_tables([extra, late]), 2)
    recompute_views(local, spark)
    after = batch_rows(local, "account_profile"), batch_rows(local, "account_hourly")
    for old, new in zip(before, after):
        strip = lambda rows: {tuple(sorted((k, str(v)) for k, v in r.items() if k != BATCH_WATERMARK)) for r in rows}  # noqa: E731
        changed = strip(old) ^ strip(new)
        changed_accounts = {dict(row)["account_id"] for row in changed}
        assert changed_accounts == set(touched)


def test_an_older_snapshot_gives_its_own_watermark(local, spark) -> None:
    events = generate(1000, days=1, seed=4).events
    ingest(local, events.slice(0, 500), 1)  # master v1
    ingest(local, events.slice(500), 2)  # master v2
    report = recompute_views(local, spark, master_version=1, force=True)
    assert report.watermark == 1 and report.events == 500


def test_spark_submit_entry_point(
    local, spark, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job spark-submit runs: same code path, paths from the profile, a JSON report on stdout."""
    import json

    import yaml

    from batch_layer.jobs import recompute_views as job

    ingest(local, generate(800, days=1, seed=9).events, 7)
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(local.profile.model_dump(by_alias=True, mode="json")))
    assert job.main(["--profile", str(profile), "--view", "account_profile"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["watermark"] == 7 and list(report["views"]) == ["account_profile"]


def test_watermark_survives_maintenance(local, spark) -> None:
    """Regression: after compaction the newest batch-view commit carries no watermark; W must still be the published one.

    The speed layer's prior state used to read W from that newest commit, found none, took W = -1 and added
    every unexpired speed partial on top of batch rows that already held them (a count went 3 -> 6).
    """
    from speed_layer.state import PriorState

    events = generate(2000, days=2, seed=5).events
    for seq, start in enumerate(range(0, 2000, 200), start=1):
        ingest(local, events.slice(start, 200), seq)
    spark.conf.set("spark.sql.adaptive.coalescePartitions.enabled", "false")  # one file per shuffle partition: something to compact
    try:
        recompute_views(local, spark)
    finally:
        spark.conf.unset("spark.sql.adaptive.coalescePartitions.enabled")
    tables = SpeedTables(local)
    prior = PriorState(local, tables)
    prior.load()
    before = {name: state.sort_by([(c, "ascending") for c in prior.views[name].group_columns]) for name, state in prior.states.items()}
    assert prior.watermark == 10

    maintain(local, retention_hours=1)
    for name in prior.views:
        newest = Table(table_uri(local.profile, batch_view(name))).history(1)[0]
        assert WATERMARK_KEY not in newest, "precondition: maintenance added a commit after the publish"
    # the speed layer's own partials of the same events, not yet expired
    for name, view in tables.views.items():
        part = view.partials_arrow(events)
        tables.speed[name].append(part.append_column("_ingest_seq", pa.array([10] * part.num_rows, pa.int64())))
    prior.load()
    assert prior.watermark == 10
    for name, state in prior.states.items():
        after = state.sort_by([(c, "ascending") for c in prior.views[name].group_columns])
        assert after.equals(before[name]), f"{name}: speed partials counted on top of the batch rows that hold them"
