"""Fencing of stale writers at the ``master/events`` commit, on real Delta tables (no broker: records are given).

Regression (#13): a second process with the same identity re-read the snapshot, saw its micro-batch number
"already committed" and skipped it, so offsets it had consumed were lost while others went in twice; a second
consumer group re-ingested the whole topic.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambdaflow.contracts.speed import SpeedTables
from lambdaflow.errors import FencedError
from lambdaflow.producer import encode_row
from lambdaflow.sample_data import generate
from lambdaflow.schemas import INGEST_SEQ
from lambdaflow.validation import RawRecord
from speed_layer.fencing import Resync
from speed_layer.microbatch import SpeedPipeline
from tests.conftest import make_env

EVENTS = generate(90, days=1, seed=7).events.to_pylist()


def records(topic: str, partition: int, first: int, last: int) -> list[RawRecord]:
    """Offsets ``first``..``last - 1`` of one partition (partition p holds sample events 30p, 30p + 1, …)."""
    return [RawRecord(topic, partition, o, None, encode_row(EVENTS[30 * partition + o])) for o in range(first, last)]


def run_batch(pipeline: SpeedPipeline, batch: list[RawRecord]) -> int:
    """One micro-batch as the runner makes it: the range consumed and the positions after it."""
    start: dict[str, dict[str, int]] = {}
    end: dict[str, dict[str, int]] = {}
    for r in batch:
        start.setdefault(r.topic, {}).setdefault(str(r.partition), r.offset)
        end.setdefault(r.topic, {})[str(r.partition)] = r.offset + 1
    return pipeline.process(batch, start, end).seq


def ingested(pipeline: SpeedPipeline) -> Counter[tuple[int, int]]:
    master = pipeline.tables.master.snapshot().to_arrow(columns=["_kafka_partition", "_kafka_offset"])
    return Counter(zip(master.column(0).to_pylist(), master.column(1).to_pylist()))


@pytest.fixture
def env(tmp_path: Path):
    return make_env(tmp_path, ["127.0.0.1:9"])  # the broker is never reached


def test_a_twin_with_the_same_identity_is_fenced_and_nothing_is_lost_or_doubled(env) -> None:
    topic = env.settings.pipeline.source.topic
    first, twin = SpeedPipeline(env.settings), SpeedPipeline(env.settings)
    first.start(), twin.start()
    first.load_state(), twin.load_state()
    run_batch(first, records(topic, 0, 0, 5))
    # the twin (started later) consumed the same records and more: it re-reads the tables instead of committing
    with pytest.raises(Resync):
        run_batch(twin, records(topic, 0, 0, 20))
    assert ingested(first) == Counter({(0, o): 1 for o in range(5)})
    twin.start(), twin.load_state()  # what the runner does on Resync (and it reads Kafka from offset 5 again)
    run_batch(twin, records(topic, 0, 5, 20))
    # the older process is the stale one: it stops without committing, whatever it holds
    with pytest.raises(FencedError, match="another process runs as speed-layer writer"):
        run_batch(first, records(topic, 0, 5, 25))
    assert ingested(first) == Counter({(0, o): 1 for o in range(20)})


def test_a_second_consumer_group_resumes_where_the_first_stopped_and_a_concurrent_one_is_fenced(env, tmp_path: Path) -> None:
    topic = env.settings.pipeline.source.topic
    first = SpeedPipeline(env.settings)
    first.start(), first.load_state()
    other_group = env.settings.model_copy(
        update={
            "profile": env.settings.profile.model_copy(
                update={"speed": env.settings.profile.speed.model_copy(update={"consumer_group": "other"})}
            )
        }
    )
    concurrent = SpeedPipeline(other_group)
    assert concurrent.start() == {}  # started before anything was ingested
    concurrent.load_state()
    run_batch(first, records(topic, 0, 0, 10))
    with pytest.raises(FencedError, match=rf"{topic}\[0\] was ingested up to offset 10 by another writer"):
        run_batch(concurrent, records(topic, 0, 0, 10))
    later = SpeedPipeline(other_group)
    assert later.start() == {topic: {"0": 10}}  # from the tables, whoever wrote them: no re-ingest
    later.load_state()
    run_batch(later, records(topic, 0, 10, 15))
    assert ingested(first) == Counter({(0, o): 1 for o in range(15)})


def test_the_sequence_number_is_the_master_version_in_commit_order(env) -> None:
    topic = env.settings.pipeline.source.topic
    pipeline = SpeedPipeline(env.settings)
    pipeline.start(), pipeline.load_state()
    seqs = [run_batch(pipeline, records(topic, p, 0, 3)) for p in range(3)]
    master = pipeline.tables.master
    assert seqs == sorted(seqs) and seqs[-1] == master.version()
    rows = master.snapshot().to_arrow(columns=[INGEST_SEQ, "_kafka_partition"])
    for seq, p in zip(seqs, range(3)):
        assert set(rows.filter(pc.equal(rows["_kafka_partition"], p)).column(INGEST_SEQ).to_pylist()) == {seq}


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(cuts=st.lists(st.tuples(st.integers(0, 1), st.integers(1, 8)), min_size=2, max_size=8))
def test_racing_writers_ingest_every_offset_exactly_once(tmp_path_factory, cuts: list[tuple[int, int]]) -> None:
    """Two writers of different groups race batch by batch over one partition; whoever loses stops and a
    fresh writer of its group takes over from the tables. Every offset ends up in master exactly once."""
    env = make_env(tmp_path_factory.mktemp("race"), ["127.0.0.1:9"])
    topic = env.settings.pipeline.source.topic
    groups = [
        env.settings,
        env.settings.model_copy(
            update={
                "profile": env.settings.profile.model_copy(
                    update={"speed": env.settings.profile.speed.model_copy(update={"consumer_group": "other"})}
                )
            }
        ),
    ]
    writers = [SpeedPipeline(g) for g in groups]
    for w in writers:
        w.start(), w.load_state()
    end = 0
    for who, size in cuts:
        writer = writers[who]
        position = int(writer.believed.get(topic, {}).get("0", 0))
        stop = min(position + size, 30)
        if stop == position:
            continue
        try:
            run_batch(writer, records(topic, 0, position, stop))
            end = stop
        except FencedError:
            writers[who] = SpeedPipeline(groups[who])  # a restart
            writers[who].start(), writers[who].load_state()
    counts = ingested(writers[0])
    assert counts == Counter({(0, o): 1 for o in range(end)})


def test_concurrent_commits_of_two_writers_on_disjoint_partitions_both_land(env) -> None:
    """Two writers (as two instances would) commit at once; each commit is the next version or retried on top."""
    topic = env.settings.pipeline.source.topic
    a = SpeedPipeline(env.settings)
    b = SpeedPipeline(
        env.settings.model_copy(
            update={
                "profile": env.settings.profile.model_copy(
                    update={"speed": env.settings.profile.speed.model_copy(update={"consumer_group": "b"})}
                )
            }
        )
    )
    for w in (a, b):
        w.start(), w.load_state()
    errors: list[BaseException] = []

    def work(w: SpeedPipeline, partition: int) -> None:
        try:
            for first in range(0, 30, 5):
                run_batch(w, records(topic, partition, first, first + 5))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w, p)) for w, p in ((a, 0), (b, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert ingested(a) == Counter({(p, o): 1 for p in (0, 1) for o in range(30)})
    tables = SpeedTables(env.settings)
    assert sorted(tables.master.history(1)[0]["lambdaflow.offsets.end"][topic].items()) == [("0", 30), ("1", 30)]


def test_a_copy_another_writer_ingested_later_counts_once_in_every_writers_feature_state(tmp_path: Path) -> None:
    """Regression (review of #13): instance 0 folded instance 1's batch into its feature state from master, late
    duplicate included, so its features counted the event twice where the training set (first copy) counts it once.
    """
    from lambdaflow.config import for_instance
    from lambdaflow.contracts.master import first_copies

    env = make_env(tmp_path, ["127.0.0.1:9"], instances=2)
    topic = env.settings.pipeline.source.topic
    a, b = SpeedPipeline(for_instance(env.settings, 0)), SpeedPipeline(for_instance(env.settings, 1))
    for w in (a, b):
        w.start(), w.load_state()
    run_batch(a, records(topic, 0, 0, 5))
    copy = [RawRecord(topic, 1, 0, None, encode_row(EVENTS[2]))]  # the same event again, in instance 1's partition
    run_batch(b, copy + records(topic, 1, 1, 4))
    run_batch(a, records(topic, 0, 5, 8))  # catches up on instance 1's batch
    spec = env.settings.pipeline.events
    master = first_copies(a.tables.master.snapshot().to_arrow(), spec.id_column, spec.time_column)
    for state, fresh in ((a.prior, None), (SpeedPipeline(for_instance(env.settings, 0)).prior, "reloaded")):
        if fresh:
            state.load()
        for name, view in state.views.items():
            want = view.merge_arrow([view.partials_arrow(master)])
            key = [(c, "ascending") for c in view.group_columns]
            assert_same_rows(state.states[name].sort_by(key), want.sort_by(key), (name, fresh))


def assert_same_rows(got, want, where) -> None:
    """Equal tables, floating-point columns to 1e-9 (sums folded in another order)."""
    import numpy as np
    import pyarrow as pa

    assert got.schema == want.schema and got.num_rows == want.num_rows, where
    for name in got.column_names:
        g, w = got.column(name), want.column(name)
        if pa.types.is_floating(g.type):
            assert np.allclose(g.to_numpy(), w.to_numpy(), rtol=1e-9, equal_nan=True), (where, name)
        else:
            assert g.equals(w), (where, name)


def test_a_batch_committed_while_the_state_loads_is_folded_in_once(tmp_path: Path) -> None:
    """Regression (#13 scale-out test: 19,915 of 200,000 events scored without one batch of their history): the
    ids seen were read from a newer master snapshot than the view state, so catch_up later dropped the batch
    committed in between as "already seen" and the state never held it."""
    from lambdaflow.config import for_instance
    from lambdaflow.contracts.master import first_copies

    env = make_env(tmp_path, ["127.0.0.1:9"], instances=2)
    topic = env.settings.pipeline.source.topic
    a, b = SpeedPipeline(for_instance(env.settings, 0)), SpeedPipeline(for_instance(env.settings, 1))
    a.start(), a.load_state(), b.start()
    run_batch(a, records(topic, 0, 0, 4))
    load_seen = b.seen.load

    def another_writer_commits_first(*args, **kwargs) -> None:
        run_batch(a, records(topic, 0, 4, 9))  # between the two reads of b's load_state
        load_seen(*args, **kwargs)

    b.seen.load = another_writer_commits_first  # type: ignore[method-assign]
    b.load_state()
    b.seen.load = load_seen  # type: ignore[method-assign]
    run_batch(b, records(topic, 1, 0, 3))
    spec = env.settings.pipeline.events
    master = b.tables.master.snapshot().to_arrow()
    before = first_copies(master.filter(pc.less(master[INGEST_SEQ], b.seq)), spec.id_column, spec.time_column)
    for name, view in b.prior.views.items():  # b's state after its batch: everything before it, then its own
        want = view.merge_arrow([view.partials_arrow(first_copies(master, spec.id_column, spec.time_column))])
        key = [(c, "ascending") for c in view.group_columns]
        assert_same_rows(b.prior.states[name].sort_by(key), want.sort_by(key), name)
    assert before.num_rows == 9
