"""A micro-batch's commits after its master commit: side by side, all settled, none started after a failure."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest

from lambdaflow.tables import CommitResult, Table, Txn
from speed_layer.commits import SideCommits

ROWS = pa.table({"n": pa.array([1, 2, 3], pa.int64())})


def _tables(tmp_path: Path, n: int) -> list[Table]:
    tables = [Table(str(tmp_path / f"t{i}")) for i in range(n)]
    for t in tables:
        t.create(ROWS.schema)
    return tables


def test_every_commit_is_in_its_table_when_settle_returns_and_a_repeat_is_skipped(tmp_path: Path) -> None:
    tables = _tables(tmp_path, 6)
    for attempt in range(2):
        commits = SideCommits()
        for i, t in enumerate(tables):
            commits.submit(f"t{i}", t, "writer-a", 7, lambda t=t: t.append(ROWS, txn=Txn("writer-a", 7)))
        skipped = commits.settle()
        assert all(t.txn_version("writer-a") == 7 and t.version() == 1 for t in tables)
        assert sorted(skipped) == ([] if attempt == 0 else sorted(f"t{i}" for i in range(6)))


def test_after_a_failed_commit_nothing_more_starts_and_settle_raises_it(tmp_path: Path) -> None:
    first, second = _tables(tmp_path, 2)
    commits = SideCommits()

    def full_disk() -> CommitResult:
        raise OSError("No space left on device")

    commits.submit("first", first, "writer-a", 3, full_disk)
    deadline = time.monotonic() + 10
    while not commits._pending[0][1].done() and time.monotonic() < deadline:
        time.sleep(0.01)
    commits.submit("second", second, "writer-a", 3, lambda: second.append(ROWS, txn=Txn("writer-a", 3)))
    with pytest.raises(OSError, match="No space left"):
        commits.settle()
    assert second.version() == 0 and second.txn_version("writer-a") is None  # left behind for recovery, as after a crash
    assert commits.settle() == []  # settled: nothing is pending any more
