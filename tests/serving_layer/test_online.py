"""The online index: its answers are the SQL unified view's, for every key, through publishes, expiries and speed commits."""

from __future__ import annotations

import math
import threading

import pyarrow as pa

from batch_layer.views import expire_speed_rows, recompute_views
from lambdaflow.sample_data import generate
from lambdaflow.views import quote
from serving_layer.engine import open_session
from serving_layer.online import OnlineSnapshot
from serving_layer.refresher import OnlineIndex
from serving_layer.sql import unified_name
from tests.conftest import SpeedEnv
from tests.speed_layer.test_speed_layer import drain, send


def _same(a: object, b: object) -> bool:
    """Equal values; floats to 1e-9 relative (a merge of states sums in another order than a full recompute)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def assert_online_equals_sql(env: SpeedEnv, snapshot: OnlineSnapshot, step: str) -> None:
    """Every key of every view: the index's rows equal ``unified_<view>``'s on the snapshot's table versions."""
    session = open_session(env.settings)
    try:
        assert session.versions == snapshot.versions, (step, "tables moved under the test")
        for name, index in snapshot.views.items():
            view = index.view
            order = ", ".join(quote(c) for c in view.group_columns)
            want = session.query(f"SELECT * FROM {quote(unified_name(name))} ORDER BY {order}")
            keys = list(dict.fromkeys(zip(*(want.column(k).to_pylist() for k in view.spec.keys))))
            assert index.keys == len(keys), (step, name, index.keys, len(keys))
            got = pa.concat_tables([index.rows(key) for key in keys]) if keys else view.result_schema.empty_table()
            assert got.num_rows == want.num_rows, (step, name)
            for g, w in zip(got.to_pylist(), want.to_pylist()):
                assert g.keys() == w.keys() and all(_same(g[c], w[c]) for c in g), (step, name, g, w)
            assert not index.rows(("no-such-key",) * len(view.spec.keys)).num_rows
    finally:
        session.connection.close()


def test_online_answers_equal_the_sql_view_through_publish_expiry_and_speed_commits(speed_env: SpeedEnv, spark) -> None:
    sample = generate(6000, days=3, seed=51).events
    send(speed_env, sample.slice(0, 2500))
    drain(speed_env, idle=2)
    first = recompute_views(speed_env.settings, spark)
    index = OnlineIndex(speed_env.settings, interval=3600)  # refreshed by hand here; the readers' test runs the thread
    assert index.refresh() and index.snapshot is not None and index.snapshot.kind == "full"
    assert_online_equals_sql(speed_env, index.snapshot, "after the first publish")

    send(speed_env, sample.slice(2500, 2000))  # speed commits only: merged into the keys they touch
    drain(speed_env, idle=2)
    assert index.refresh() and index.snapshot.kind == "speed"
    assert any(v.overlay for v in index.snapshot.views.values())
    assert_online_equals_sql(speed_env, index.snapshot, "after speed commits")

    recompute_views(speed_env.settings, spark)  # a publish moves W: rebuilt in full
    assert index.refresh() and index.snapshot.kind == "full"
    assert_online_equals_sql(speed_env, index.snapshot, "after the second publish")

    assert set(expire_speed_rows(speed_env.settings).values()) == {first.watermark}  # through the previous run's W
    assert index.refresh() and index.snapshot.kind == "speed"
    assert_online_equals_sql(speed_env, index.snapshot, "after expiry")
    assert not index.refresh()  # no table moved: nothing rebuilt

    send(speed_env, sample.slice(4500))
    drain(speed_env, idle=2)
    assert index.refresh() and index.snapshot.kind == "speed"
    assert_online_equals_sql(speed_env, index.snapshot, "after more speed commits")


def test_readers_never_wait_for_a_refresh_nor_see_half_of_one(speed_env: SpeedEnv, spark) -> None:
    """Lookups on every key while publishes and expiries are refreshed in the background: totals never move."""
    sample = generate(3000, days=3, seed=52).events
    send(speed_env, sample.slice(0, 1500))
    drain(speed_env, idle=2)
    recompute_views(speed_env.settings, spark)
    send(speed_env, sample.slice(1500))
    drain(speed_env, idle=2)
    refreshes: list[str] = []
    index = OnlineIndex(speed_env.settings, interval=0.05, on_refresh=lambda kind, _: refreshes.append(kind))
    accounts = sorted(set(sample.column("account_id").to_pylist()))
    merchants = sorted(set(sample.column("merchant_id").to_pylist()))
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                snapshot = index.current()  # one snapshot per pass: all keys from the same versions
                profile = sum(snapshot.views["account_profile"].rows((a,)).column("txn_count").to_numpy().sum() for a in accounts)
                daily = sum(snapshot.views["merchant_daily"].rows((m,)).column("txn_count").to_numpy().sum() for m in merchants)
                seen.append((int(profile), int(daily)))
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(2):
            recompute_views(speed_env.settings, spark, force=True)
            expire_speed_rows(speed_env.settings)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert len(seen) > 10
    assert set(seen) == {(sample.num_rows, sample.num_rows)}, sorted(set(seen))
    assert refreshes.count("full") >= 2, refreshes  # the publishes were refreshed while the readers ran


def test_the_index_holds_a_complete_prefix_of_micro_batches_over_writers_and_views(kafka, tmp_path) -> None:
    """Regression: the index read each speed view at its newest version, so a refresh while the speed layer was
    committing micro-batch s view by view served some views at s and others at s-1 (a vector mixing two points in
    time, which the consistency check reported); and with several writers, the rows of writer 1's batch 9, landing
    after writer 0's batch 10 had been indexed, were never merged at all. The index now cuts at the newest
    micro-batch that every writer has completed in every view.
    """
    from lambdaflow.contracts.commits import APP_KEY, SEQ_KEY, app_id
    from lambdaflow.contracts.master import to_master_rows
    from lambdaflow.contracts.speed import SpeedTables
    from lambdaflow.schemas import INGEST_SEQ
    from lambdaflow.tables import Txn
    from tests.conftest import make_env

    env = make_env(tmp_path, kafka, instances=2)
    send(env, generate(1500, days=2, seed=53).events)
    drain(env, idle=2)  # writer 0 (the default instance)
    index = OnlineIndex(env.settings, interval=3600)
    assert index.refresh()
    before = index.snapshot
    tables = SpeedTables(env.settings)
    spec = env.settings.pipeline.events

    def commit_master(writer: str, seed: int) -> tuple[int, pa.Table]:
        events = generate(40, days=1, seed=seed).events
        committed: dict[str, pa.Table] = {}

        def build(head):
            seq = head.version + 1
            committed["rows"] = to_master_rows(events, spec, seq)
            return committed["rows"], Txn(writer, seq), {SEQ_KEY: seq, APP_KEY: writer}

        return tables.master.append_next(build).version, committed["rows"]

    def commit_view(writer: str, seq: int, rows: pa.Table, name: str) -> None:
        part = tables.views[name].partials_arrow(rows)
        tagged = part.append_column(INGEST_SEQ, pa.array([seq] * part.num_rows, pa.int64()))
        tables.speed[name].append(tagged, txn=Txn(writer, seq))

    def unchanged(step: str) -> None:
        snap = index.snapshot
        assert snap.as_of_seq == before.as_of_seq, step
        for name, view_index in before.views.items():
            for key in list(view_index.base.spans)[:200]:
                assert snap.views[name].rows(key).equals(view_index.rows(key)), (step, name, key)

    w0, w1 = app_id(env.settings, 0), app_id(env.settings, 1)
    s1, rows1 = commit_master(w1, 54)  # writer 1 is between its master commit and its views
    s2, rows2 = commit_master(w0, 55)
    for name in tables.views:  # writer 0 completes a later batch entirely
        commit_view(w0, s2, rows2, name)
    index.refresh()
    unchanged("writer 0's later batch is complete, writer 1's earlier one is not")
    names = list(tables.views)
    for i, name in enumerate(names):  # the speed layer's commit order, one view at a time
        commit_view(w1, s1, rows1, name)
        if i < len(names) - 1:
            index.refresh()
            unchanged(f"after {name} of writer 1's batch")
    assert index.refresh()
    assert index.snapshot.as_of_seq == s2 > s1
    assert_online_equals_sql(env, index.snapshot, "after both batches, in every view")
