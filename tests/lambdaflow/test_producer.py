"""Producing and replaying: every record acknowledged or reported, keyed, in event-time order."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambdaflow import producer, services
from lambdaflow.sample_data import generate
from tests.conftest import run_cli


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_replay_a_file_in_event_time_order(broker: list[str], test_profile: Path, tmp_path: Path, fmt: str) -> None:
    events = generate(600, days=2, seed=5).events
    shuffled = events.take(pa.array(list(reversed(range(events.num_rows)))))
    path = tmp_path / f"events.{fmt}"
    if fmt == "parquet":
        pq.write_table(shuffled, path)
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(shuffled, path)
    else:
        path.write_text("".join(producer.encode_row(r).decode() + "\n" for r in shuffled.to_pylist()))
    topic = f"replay-{fmt}"
    out = run_cli("produce", "--file", str(path), "--topic", topic, profile=test_profile)
    assert "sent 600 records" in out.stdout
    received = list(services.iter_topic(broker, topic))
    assert sorted(json.loads(r.value)["event_id"] for r in received) == sorted(events["event_id"].to_pylist())
    for record in received:  # keyed by the partition key
        assert record.key.decode() == json.loads(record.value)["account_id"]
    by_partition: dict[int, list[str]] = {}
    for record in sorted(received, key=lambda r: (r.partition, r.offset)):
        by_partition.setdefault(record.partition, []).append(json.loads(record.value)["event_time"])
    for times in by_partition.values():  # per partition, in event-time order
        assert times == sorted(times)


def test_unacknowledged_records_are_reported_not_dropped(broker: list[str]) -> None:
    rows = pa.table({"k": ["a", "b", "c"], "blob": ["x", "y" * (2 << 20), "z"]})  # 2 MiB > max_request_size
    with pytest.raises(producer.ProduceError, match="1 of 3 records were not acknowledged"):
        producer.produce(broker, [producer.Stream("too-big", rows, "k", None)])


def test_unknown_file_type_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "events.xlsx"
    path.write_text("")
    with pytest.raises(ValueError, match="use .csv, .parquet or .jsonl"):
        producer.read_file(path)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 1000), max_size=40),
    st.lists(st.integers(0, 1000), max_size=40),
    st.integers(1, 7),
)
def test_streams_are_interleaved_by_time_and_complete(event_times: list[int], label_times: list[int], chunk: int) -> None:
    old, producer.CHUNK_ROWS = producer.CHUNK_ROWS, chunk
    try:
        ts = pa.timestamp("us", tz="UTC")
        a = pa.table({"t": pa.array(sorted(event_times), ts), "src": ["e"] * len(event_times)})
        b = pa.table({"t": pa.array(sorted(label_times), ts), "src": ["l"] * len(label_times)})
        out = [
            r
            for _, c in producer._merged_chunks([producer.Stream("e", a, None, "t"), producer.Stream("l", b, None, "t")])
            for r in c.to_pylist()
        ]
    finally:
        producer.CHUNK_ROWS = old
    assert len(out) == len(event_times) + len(label_times)
    times = [r["t"] for r in out]
    assert times == sorted(times)
