"""The Delta table layer against real tables on disk, with every delta-rs trap of docs/architecture.md §7 (storage)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambdaflow.tables import (
    ConcurrentCommitError,
    PartitionFilterError,
    Table,
    Txn,
    escape_partition_value,
    parse_partition_dir,
    partition_dir,
    unescape_partition_value,
    vacuum,
    write_spark,
)

UTC = dt.timezone.utc
SCHEMA = pa.schema([("id", pa.int64()), ("k", pa.string()), ("ts", pa.timestamp("us", tz="UTC")), ("x", pa.float64())])
#: Partition values that break naive path handling: separators, escapes, '=', '%', spaces, unicode, null.
NASTY = ["a/b", "x y", "100%", "k=v", "é:ü", "a#b?c", "50%25", "[x]{y}^", None, "plain"]


def rows(ids: list[int], keys: list[str | None]) -> pa.Table:
    return pa.table(
        {
            "id": ids,
            "k": keys,
            "ts": [dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(hours=i) for i in ids],
            "x": [i * 1.5 for i in ids],
        },
        schema=SCHEMA,
    )


@pytest.fixture
def table(tmp_path: Path) -> Table:
    t = Table((tmp_path / "t").as_uri())
    t.create(SCHEMA, ["k"])
    return t


def sorted_rows(t: pa.Table) -> list[dict]:
    return sorted(t.to_pylist(), key=lambda r: r["id"])


def test_special_partition_values_roundtrip(table: Table) -> None:
    data = rows(list(range(len(NASTY))), NASTY)
    table.append(data)
    snap = table.snapshot()
    assert {f.partition_values["k"] for f in snap.files} == set(NASTY)
    assert sorted_rows(snap.to_arrow()) == sorted_rows(data)
    # An independent reader (plain delta-rs) sees the same rows.
    assert sorted_rows(DeltaTable(table.uri).to_pyarrow_table().select(SCHEMA.names).cast(SCHEMA)) == sorted_rows(data)


def test_removes_really_remove(table: Table) -> None:
    table.append(rows([0, 1, 2], ["a/b", "100%", "x y"]))
    doomed = [f for f in table.snapshot().files if f.partition_values["k"] in ("a/b", "100%")]
    table.remove_files(doomed)
    assert table.snapshot().to_arrow().column("id").to_pylist() == [2]
    assert DeltaTable(table.uri).to_pyarrow_table().column("id").to_pylist() == [2]
    # the old version still has them (time travel), until vacuum
    assert sorted(table.snapshot(1).to_arrow().column("id").to_pylist()) == [0, 1, 2]


def test_overwrite_outside_partition_filter_rejected(table: Table) -> None:
    table.append(rows([0, 1], ["a/b", "x y"]))
    before = table.version()
    with pytest.raises(PartitionFilterError, match="would add"):
        table.overwrite(rows([5, 6], ["a/b", "x y"]), partitions=[{"k": "a/b"}])
    assert table.version() == before
    assert sorted(table.snapshot().to_arrow().column("id").to_pylist()) == [0, 1]


def test_overwrite_replaces_exactly_the_given_partitions(table: Table) -> None:
    table.append(rows([0, 1, 2, 3], ["a/b", "x y", None, "plain"]))
    table.overwrite(rows([10, 11], ["a/b", None]), partitions=[{"k": "a/b"}, {"k": None}, {"k": "x y"}])
    got = {r["k"]: r["id"] for r in table.snapshot().to_arrow().to_pylist()}
    assert got == {"a/b": 10, None: 11, "plain": 3}
    assert table.history(1)[0]["operation"] == "WRITE"


def test_full_overwrite(table: Table) -> None:
    table.append(rows([0, 1], ["a", "b"]))
    table.overwrite(rows([7], ["c"]))
    assert table.snapshot().to_arrow().column("id").to_pylist() == [7]


def test_repeated_or_lower_txn_version_is_skipped(table: Table) -> None:
    first = table.append(rows([0], ["a"]), txn=Txn("speed/g1", 5), metadata={"offsets": {"0": [0, 1]}})
    assert not first.skipped
    again = table.append(rows([1], ["a"]), txn=Txn("speed/g1", 5))
    lower = table.append(rows([2], ["a"]), txn=Txn("speed/g1", 4))
    assert again.skipped and lower.skipped and again.version == first.version
    assert table.snapshot().to_arrow().column("id").to_pylist() == [0]
    other_app = table.append(rows([3], ["a"]), txn=Txn("speed/g2", 1))
    assert not other_app.skipped
    assert table.txn_version("speed/g1") == 5 and table.txn_version("speed/g2") == 1
    commit = table.history(2)[1]
    assert commit["offsets"] == {"0": [0, 1]}


def test_stale_concurrent_writer_rejected(table: Table) -> None:
    table.append(rows([0], ["a"]), txn=Txn("app", 1))
    stale_a, stale_b = DeltaTable(table.uri), DeltaTable(table.uri)  # two writers, same snapshot
    files_a = table.write_files(rows([1], ["a"]), SCHEMA, ("k",))
    files_b = table.write_files(rows([2], ["a"]), SCHEMA, ("k",))
    table.commit_files(files_a, txn=Txn("app", 2), _delta=stale_a)
    with pytest.raises(ConcurrentCommitError):
        table.commit_files(files_b, txn=Txn("app", 3), _delta=stale_b)
    assert sorted(table.snapshot().to_arrow().column("id").to_pylist()) == [0, 1]


def test_delete_rows_rewrites_partly_matched_files(table: Table) -> None:
    table.append(rows([0, 1, 2, 3], ["a", "a", "b", "c"]))
    table.delete_rows(pc.field("id") >= 1, metadata={"why": "test"})
    assert table.snapshot().to_arrow().column("id").to_pylist() == [0]
    assert table.history(1)[0]["why"] == "test"


def test_footer_statistics_have_timestamp_bounds(table: Table) -> None:
    table.append(rows([0, 1, 2], ["a", "a", "a"]))
    stats = pa.table(DeltaTable(table.uri).get_add_actions(flatten=True)).to_pylist()[0]
    assert stats["num_records"] == 3
    assert stats["min.id"] == 0 and stats["max.id"] == 2
    assert stats["min.ts"] is not None and stats["max.ts"] is not None
    # Data skipping through those stats returns exactly the right rows.
    cut = pa.scalar(dt.datetime(2026, 1, 1, 1, 0, tzinfo=UTC), pa.timestamp("us", tz="UTC"))
    assert table.snapshot().to_arrow(filter=pc.field("ts") >= cut).column("id").to_pylist() == [1, 2]


def test_vacuum_deletes_unreferenced_files_only(table: Table, tmp_path: Path) -> None:
    table.append(rows([0, 1], ["a", "b"]))
    table.overwrite(rows([2], ["a"]), partitions=[{"k": "a"}])
    on_disk = lambda: sorted(p.name for p in (tmp_path / "t").rglob("*.parquet"))  # noqa: E731
    assert len(on_disk()) == 3
    vacuum(table, retention_hours=0)
    assert len(on_disk()) == 2
    assert sorted(table.snapshot().to_arrow().column("id").to_pylist()) == [1, 2]


def test_create_is_idempotent_and_guards_schema(table: Table) -> None:
    assert table.create(SCHEMA, ["k"]) == 0
    with pytest.raises(Exception, match="exists with schema"):
        table.create(SCHEMA.append(pa.field("y", pa.int32())), ["k"])


@given(st.text(min_size=1, max_size=20))
def test_escape_roundtrip(value: str) -> None:
    assert unescape_partition_value(escape_partition_value(value)) == value
    assert "/" not in escape_partition_value(value)
    path = partition_dir(["k", "d"], {"k": value, "d": None}) + "/part-0.parquet"
    assert parse_partition_dir(path, ["k", "d"]) == {"k": value, "d": None}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=8),
        min_size=1,
        max_size=4,
    )
)
def test_any_partition_string_roundtrips_through_a_table(tmp_path_factory: pytest.TempPathFactory, keys: list[str]) -> None:
    t = Table((tmp_path_factory.mktemp("prop") / "t").as_uri())
    t.create(SCHEMA, ["k"])
    data = rows(list(range(len(keys))), keys)
    t.append(data)
    assert sorted_rows(t.snapshot().to_arrow()) == sorted_rows(data)


# --------------------------------------------------------------------------- Spark path


def test_spark_write_reads_back_identically(spark, tmp_path: Path) -> None:
    table = Table((tmp_path / "s").as_uri())
    schema = SCHEMA.append(pa.field("d", pa.date32()))
    table.create(schema, ["k", "d"])
    data = rows(list(range(len(NASTY))), NASTY)
    data = data.append_column("d", pa.array([dt.date(2026, 1, 1 + i % 2) for i in range(len(NASTY))]))
    frame = spark.createDataFrame(data.to_pandas())
    result = write_spark(table, frame, txn=Txn("spark-job", 1), metadata={"watermark": 3}, operation="test")
    assert not result.skipped
    snap = table.snapshot()
    expected = sorted_rows(data.select(schema.names))
    assert sorted_rows(snap.to_arrow()) == expected  # delta-rs reads Spark's files
    back = snap.to_spark(spark).toPandas()
    assert sorted_rows(pa.Table.from_pandas(back, preserve_index=False).cast(schema)) == expected  # and Spark too
    assert {f.partition_values["k"] for f in snap.files} == set(NASTY)
    assert not (tmp_path / "s" / "_staging").exists() or not any((tmp_path / "s" / "_staging").iterdir())
    commit = table.history(1)[0]
    assert commit["watermark"] == 3 and commit["lambdaflow.operation"] == "test"
    # the same job again is skipped by its txn version
    assert write_spark(table, frame, txn=Txn("spark-job", 1)).skipped
    assert table.snapshot().num_records == len(NASTY)


def test_spark_overwrite_outside_filter_rejected_and_cleaned(spark, tmp_path: Path) -> None:
    table = Table((tmp_path / "s").as_uri())
    table.create(SCHEMA, ["k"])
    table.append(rows([0, 1], ["a", "b"]))
    frame = spark.createDataFrame(rows([5, 6], ["a", "b"]).to_pandas())
    with pytest.raises(PartitionFilterError):
        write_spark(table, frame, "overwrite", partitions=[{"k": "a"}])
    assert sorted(table.snapshot().to_arrow().column("id").to_pylist()) == [0, 1]
    assert len(list((tmp_path / "s").rglob("*.parquet"))) == 2  # the rejected files were deleted
    write_spark(table, frame.where("k = 'a'"), "overwrite", partitions=[{"k": "a"}])
    assert sorted(table.snapshot().to_arrow().column("id").to_pylist()) == [1, 5]


def test_spark_reads_an_old_version(spark, table: Table) -> None:
    table.append(rows([0, 1], ["a", "b"]))
    table.overwrite(rows([9], ["z"]))
    assert sorted(r.id for r in table.snapshot(1).to_spark(spark).collect()) == [0, 1]
    assert [r.id for r in table.snapshot().to_spark(spark).collect()] == [9]
    assert table.snapshot(0).to_spark(spark).count() == 0


def test_processes_creating_one_table_at_once_all_get_it(tmp_path: Path) -> None:
    """Regression (scale-out test, CI): three instances starting together; one lost the create race and exited 1."""
    import threading

    schema = pa.schema([("n", pa.int64())])
    uri = str(tmp_path / "raced")
    for attempt in range(5):
        barrier, errors = threading.Barrier(6), []

        def create(uri: str = f"{uri}-{attempt}", barrier: threading.Barrier = barrier, errors: list[Exception] = errors) -> None:
            barrier.wait()
            try:
                Table(uri).create(schema)
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=create) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and Table(f"{uri}-{attempt}").snapshot().schema == schema  # (a rival create may add a version)
