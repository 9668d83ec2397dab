"""Producing and replaying: every record acknowledged or reported, keyed, in event-time order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambdaflow import producer, services
from lambdaflow.config import FieldSpec, load_pipeline
from lambdaflow.errors import InputFileError, ProduceError
from lambdaflow.replay import BadLine, Chunk, FileReader, TimeSorted, read_file
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
    with pytest.raises(ProduceError, match="1 of 3 records were not acknowledged"):
        producer.produce(broker, [producer.Stream("too-big", rows, "k", None)])


def test_unknown_file_type_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "events.xlsx"
    path.write_text("")
    with pytest.raises(ValueError, match="use .csv, .parquet or .jsonl"):
        read_file(path)


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


# --------------------------------------------------------------------------- replaying real-world files
# (finding 9 of "exact under real-world faults": one bad line must neither abort nor corrupt a replay)

PIPELINE = load_pipeline(Path(__file__).resolve().parents[2] / "conf/pipeline.yaml")


def _received(broker: list[str], topic: str) -> list[dict]:
    return [
        json.loads(r.value) | {"_key": r.key.decode() if r.key else None, "_partition": r.partition, "_offset": r.offset}
        for r in services.iter_topic(broker, topic)
    ]


def _jsonl(rows: list[dict]) -> str:
    return "".join(producer.encode_row(r).decode() + "\n" for r in rows)


def test_csv_keeps_leading_zeros_of_declared_strings(broker: list[str], test_profile: Path, tmp_path: Path) -> None:
    """Regression: `00123` was read as the number 123, so keys lost their zeros and every record was quarantined."""
    events = generate(40, days=1, seed=3).events.to_pylist()
    lines = ["event_id,account_id,merchant_id,mcc,amount,currency,country,channel,card_present,event_time"]
    for i, e in enumerate(events):
        t = e["event_time"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lines.append(
            f"{i:06d},{i % 7:05d},{e['merchant_id']},0{e['mcc']},{e['amount']},{e['currency']},{e['country']},{e['channel']},{str(e['card_present']).lower()},{t}"
        )
    path = tmp_path / "zeros.csv"
    path.write_text("\n".join(lines) + "\n")
    run_cli("produce", "--file", str(path), "--topic", "replay-zeros", profile=test_profile)
    received = _received(broker, "replay-zeros")
    assert sorted(r["event_id"] for r in received) == [f"{i:06d}" for i in range(40)]
    for r in received:
        assert isinstance(r["account_id"], str) and len(r["account_id"]) == 5 and r["account_id"] == r["_key"]
        assert isinstance(r["mcc"], int)  # declared int: "05411" is the number 5411


def test_empty_csv_field_is_null_like_parquet(tmp_path: Path) -> None:
    """Regression: an empty CSV field became "" while the same data from Parquet was null."""
    fields = {
        "id": FieldSpec(type="string"),
        "note": FieldSpec(type="string", nullable=True),
        "n": FieldSpec(type="int", nullable=True),
        "t": FieldSpec(type="timestamp"),
    }
    (tmp_path / "a.csv").write_text(
        'id,note,n,t\n001,,,2026-01-01T00:00:00Z\n002,"",7,2026-01-01T00:00:01Z\n003,x,8,2026-01-01T00:00:02Z\n'
    )
    ts = pa.timestamp("us", tz="UTC")
    pq.write_table(
        pa.table(
            {
                "id": ["001", "002", "003"],
                "note": [None, "", "x"],
                "n": pa.array([None, 7, 8], pa.int64()),
                "t": pa.array([1767225600000000, 1767225601000000, 1767225602000000], ts),
            }
        ),
        tmp_path / "a.parquet",
    )
    (tmp_path / "a.jsonl").write_text(
        '{"id":"001","t":"2026-01-01T00:00:00Z"}\n{"id":"002","note":"","n":7,"t":"2026-01-01T00:00:01Z"}\n{"id":"003","note":"x","n":8,"t":"2026-01-01T00:00:02Z"}\n'
    )
    tables = {
        fmt: pa.concat_tables(c.rows for c in FileReader(tmp_path / f"a.{fmt}", fields).chunks()) for fmt in ("csv", "parquet", "jsonl")
    }
    assert tables["csv"].to_pylist()[0] == {"id": "001", "note": None, "n": None, "t": tables["csv"]["t"][0].as_py()}
    assert tables["csv"].to_pylist() == tables["parquet"].to_pylist() == tables["jsonl"].to_pylist()
    assert tables["csv"].schema.field("n").type == pa.int32()  # the declared type, not what the file suggests


def test_bad_jsonl_line_is_reported_by_number_and_the_rest_sent(broker: list[str], test_profile: Path, tmp_path: Path) -> None:
    """Regression: one malformed line aborted the whole replay with an Arrow traceback."""
    events = generate(30, days=1, seed=4).events.to_pylist()
    lines = _jsonl(events).splitlines()
    lines[6] = lines[6][:-1]  # line 7: the closing brace is lost
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = run_cli("produce", "--file", str(path), "--topic", "replay-badline", profile=test_profile)
    assert f"{path}:7:" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "skipped 1 bad line" in out.stdout, out.stdout
    assert "sent 29 records" in out.stdout
    received = sorted(r["event_id"] for r in _received(broker, "replay-badline"))
    assert received == sorted(e["event_id"] for i, e in enumerate(events) if i != 6)


def test_type_changing_between_lines_is_reported_not_fatal(broker: list[str], test_profile: Path, tmp_path: Path) -> None:
    """Regression: a field whose JSON type changes between lines aborted the replay (Arrow inferred the first type)."""
    events = generate(30, days=1, seed=6).events.to_pylist()
    events[20]["mcc"] = "5411"  # a string where the pipeline declares an int
    events[25]["account_id"] = 12345  # a number where the pipeline declares a string
    path = tmp_path / "drift.jsonl"
    path.write_text(_jsonl(events))
    out = run_cli("produce", "--file", str(path), "--topic", "replay-drift", profile=test_profile)
    assert f"{path}:21:" in out.stderr and f"{path}:26:" in out.stderr, out.stderr
    assert "mcc" in out.stderr and "account_id" in out.stderr
    assert "skipped 2 bad lines" in out.stdout and "sent 28 records" in out.stdout, out.stdout
    assert len(_received(broker, "replay-drift")) == 28


def test_labels_file_is_replayed_in_label_time_order(broker: list[str], test_profile: Path, tmp_path: Path) -> None:
    """Regression: a labels file was ordered by the events' time column (absent from labels), i.e. not at all."""
    labels = generate(2500, days=3, seed=8).labels
    assert labels.num_rows > 20
    shuffled = labels.take(pa.array(list(reversed(range(labels.num_rows)))))
    path = tmp_path / "labels.parquet"
    pq.write_table(shuffled, path)
    out = run_cli("produce", "--file", str(path), "--stream", "labels", "--topic", "replay-labels", profile=test_profile)
    assert f"sent {labels.num_rows} records" in out.stdout
    received = _received(broker, "replay-labels")
    assert sorted(r["event_id"] for r in received) == sorted(labels["event_id"].to_pylist())
    by_partition: dict[int, list[str]] = {}
    for r in sorted(received, key=lambda r: (r["_partition"], r["_offset"])):
        assert r["_key"] == r["account_id"]
        by_partition.setdefault(r["_partition"], []).append(r["reported_at"])
    for times in by_partition.values():
        assert times == sorted(times)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_file_bigger_than_one_chunk_is_streamed(tmp_path: Path, fmt: str) -> None:
    generated = generate(3000, days=2, seed=9).events
    events = generated.take(pa.array(np.random.default_rng(1).permutation(generated.num_rows)))  # out of time order
    path = tmp_path / f"big.{fmt}"
    if fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(events, path)
    elif fmt == "parquet":
        pq.write_table(events, path, row_group_size=700)
    else:
        path.write_text(_jsonl(events.to_pylist()))
    reader = FileReader(path, PIPELINE.events.fields, block_bytes=32 << 10, batch_rows=500)
    sizes, lines = [], []
    read = [0]
    for chunk in reader.chunks(on_read=lambda n: read.__setitem__(0, read[0] + n)):
        sizes.append(chunk.rows.num_rows)
        lines.extend(chunk.lines.tolist())
    assert len(sizes) > 1 and max(sizes) < events.num_rows  # never the whole file at once
    assert sum(sizes) == events.num_rows == reader.report.rows
    first = 2 if fmt == "csv" else 1  # line numbers (a row number for Parquet)
    assert lines == list(range(first, first + events.num_rows))
    assert read[0] == reader.total
    # and sorted by time in bounded memory: runs spilled to disk, merged back in exact order
    chunks = FileReader(path, PIPELINE.events.fields, block_bytes=32 << 10, batch_rows=500).chunks()
    with TimeSorted(chunks, "event_time", run_rows=1000, merge_rows=100) as rows:
        assert rows.spilled_runs > 1 and rows.out_of_order > 0
        sent = [r for table in rows for r in table.to_pylist()]
    assert [r["event_id"] for r in sent] == events.sort_by("event_time")["event_id"].to_pylist()


def test_bad_csv_rows_are_reported_with_their_line(tmp_path: Path) -> None:
    fields = {"id": FieldSpec(type="string"), "n": FieldSpec(type="int"), "t": FieldSpec(type="timestamp")}
    path = tmp_path / "rows.csv"
    path.write_text(
        "id,n,t\n"
        "a,1,2026-01-01T00:00:03Z\n"  # 2
        "b,2\n"  # 3: a field short
        '"multi\nline",3,2026-01-01T00:00:02Z\n'  # 4-5
        "\n"  # 6: blank, nothing to send
        "c,x,2026-01-01T00:00:01Z\n"  # 7: not an int
        "d,4,yesterday\n"  # 8: not a time
        "e,5,2026-01-01 00:00:00\n"  # 9: naive = UTC
        'g"h,6,2026-01-01T00:00:04Z\n'  # 10: a stray quote costs this line only
        "i,7,2026-01-01T00:00:05+02:00\n"  # 11
    )
    bad: list[BadLine] = []
    reader = FileReader(path, fields, on_bad=bad.append)
    chunks = list(reader.chunks())
    rows = pa.concat_tables(c.rows for c in chunks)
    assert rows["id"].to_pylist() == ["a", "multi\nline", "e", "i"]
    assert [line for c in chunks for line in c.lines.tolist()] == [2, 4, 9, 11]
    assert [b.line for b in bad] == [3, 7, 8, 10]
    assert "2 fields, expected 3" in bad[0].reason and "'n'" in bad[1].reason and "'t'" in bad[2].reason and "quote" in bad[3].reason
    assert str(bad[1]).startswith(f"{path}:7: ")
    assert reader.report.skipped == 4 and reader.report.rows == 4
    assert [t.isoformat() for t in rows["t"].to_pylist()][2:] == ["2026-01-01T00:00:00+00:00", "2025-12-31T22:00:05+00:00"]


def test_a_file_with_no_readable_line_is_refused_before_sending(tmp_path: Path) -> None:
    path = tmp_path / "garbage.jsonl"
    path.write_text("not json\nstill not\n")
    with pytest.raises(InputFileError, match=r"cannot be read as jsonl.*garbage.jsonl:1"):
        list(FileReader(path, PIPELINE.events.fields).chunks())


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.integers(0, 30)), max_size=120),
    st.integers(1, 9),
    st.integers(1, 5),
    st.integers(1, 7),
)
def test_time_sort_is_exact_and_stable_across_spilled_runs(times: list[int | None], chunk: int, run: int, batch: int) -> None:
    ts = pa.timestamp("us", tz="UTC")
    table = pa.table({"t": pa.array(times, ts), "line": list(range(len(times)))})
    chunks = [Chunk(table.slice(i, chunk), np.arange(i, min(i + chunk, len(times)), dtype=np.int64)) for i in range(0, len(times), chunk)]
    with TimeSorted(chunks, "t", run_rows=run, merge_rows=batch, out_rows=batch + 1) as rows:
        out = [r for c in rows for r in c.to_pylist()]
        assert rows.num_rows == len(times)
    expected = sorted(range(len(times)), key=lambda i: (times[i] is None, times[i] or 0, i))
    assert [r["line"] for r in out] == expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.text('a0,"\n é', max_size=8), st.text('b1,"\n', max_size=6)), max_size=40),
    st.sampled_from(["\n", "\r\n"]),
    st.integers(8, 200),
)
def test_csv_records_round_trip_with_their_lines(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, str]], eol: str, block: int
) -> None:
    """Quoted values with commas, quotes and line breaks are cut into records exactly, whatever the block size."""
    import csv
    import io

    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator=eol)
    writer.writerow(["x", "y"])
    writer.writerows(rows)
    path = tmp_path_factory.mktemp("csv") / "rows.csv"
    path.write_bytes(buffer.getvalue().encode())
    fields = {"x": FieldSpec(type="string", nullable=True), "y": FieldSpec(type="string", nullable=True)}
    bad: list[BadLine] = []
    chunks = list(FileReader(path, fields, block_bytes=block, on_bad=bad.append).chunks())
    assert not bad
    got = [(r["x"], r["y"]) for c in chunks for r in c.rows.to_pylist()]
    assert got == [(x or None, y or None) for x, y in rows]  # an empty unquoted field is null
    expected_lines, line = [], 2
    for x, y in rows:
        expected_lines.append(line)
        line += 1 + x.count("\n") + y.count("\n")
    assert [n for c in chunks for n in c.lines.tolist()] == expected_lines


def test_a_rate_is_kept_within_a_chunk_not_in_bursts(broker: list[str]) -> None:
    """Regression: at 1,000/s, 2,000 rows (less than one 5,000-row chunk) went out in one burst; now ~2 s of sends."""
    rows = pa.table({"k": [f"k{i % 7}" for i in range(2000)], "n": list(range(2000))})
    topic = f"paced-{np.random.default_rng().integers(1 << 40)}"
    report = producer.produce(broker, [producer.Stream(topic, rows, "k", None)], rate=1000)
    stamps = np.sort([r.timestamp for r in services.iter_topic(broker, topic)])
    assert len(stamps) == 2000 and report.seconds >= 1.9
    # Kafka's create time of each record is its send: no 200-ms window holds much more than 200 of them
    busiest = max(np.searchsorted(stamps, t + 200, side="left") - i for i, t in enumerate(stamps))
    assert busiest <= 400, busiest
