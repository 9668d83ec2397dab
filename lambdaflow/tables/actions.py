"""What a commit is made of: data files, application transactions, results, and the checks before committing.

* :class:`DataFile` is a Parquet file of a table; it becomes an ``add`` action
  (:meth:`DataFile.to_add`) or a ``remove`` action (:func:`remove_action`).
* :class:`Txn` is a Delta application transaction (``txn`` action): it makes a
  commit happen once per (app_id, version).
* :class:`CommitResult` is what :meth:`lambdaflow.tables.Table.commit_files` returns.

The checks here guard against delta-rs traps (listed in the :mod:`lambdaflow.tables`
docstring): delta-rs accepts an overwrite that adds files outside its partition
filter (:func:`check_inside`), and a repeated or lower ``txn`` version
(:func:`already_committed`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deltalake import DeltaTable
from deltalake.transaction import AddAction, RemoveAction

from lambdaflow.errors import PartitionFilterError

__all__ = ["CommitResult", "DataFile", "Head", "Txn", "already_committed", "check_inside", "remove_action"]


@dataclass(frozen=True)
class Txn:
    """An application transaction: the commit is applied once per (app_id, version).

    Attributes:
        app_id: the writer's identity (pipeline + consumer group).
        version: a number that grows with every unit of work (the micro-batch ``s``).
    """

    app_id: str
    version: int


@dataclass(frozen=True)
class Head:
    """The table version an exact append is built against (:meth:`lambdaflow.tables.Table.append_next`).

    Attributes:
        version: the version read; the append commits version + 1 or nothing.
    """

    version: int
    _delta: DeltaTable

    def txn_version(self, app_id: str) -> int | None:
        """The application's last ``txn`` version at this version."""
        return self._delta.transaction_version(app_id)

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Commit infos, newest first (they may run past :attr:`version` when another writer committed since)."""
        return self._delta.history(limit)


@dataclass(frozen=True)
class CommitResult:
    """What a commit did.

    Attributes:
        version: the table version after the call.
        skipped: True when the ``txn`` version was already committed, so nothing was written.
    """

    version: int
    skipped: bool = False


@dataclass(frozen=True)
class DataFile:
    """A Parquet data file of a table.

    Attributes:
        path: path relative to the table root, not URL-encoded.
        size: bytes on storage.
        partition_values: partition column → value as Delta serialises it (None for null).
        num_records: rows in the file.
        stats: Delta statistics JSON (numRecords, minValues, maxValues, nullCount).
        modification_time: milliseconds since the epoch.
    """

    path: str
    size: int
    partition_values: dict[str, str | None]
    num_records: int
    stats: str
    modification_time: int

    def to_add(self) -> AddAction:
        """The ``add`` action that commits this file (the raw path: delta-rs URL-encodes it itself)."""
        return AddAction(
            path=self.path,
            size=self.size,
            partition_values=self.partition_values,
            modification_time=self.modification_time,
            data_change=True,
            stats=self.stats,
        )


def remove_action(f: DataFile) -> RemoveAction:
    """The ``remove`` action that drops ``f`` from the table."""
    # The path must be the decoded one (DataFile.path), or the remove matches nothing.
    return RemoveAction(
        path=f.path,
        data_change=True,
        deletion_timestamp=int(time.time() * 1000),
        size=f.size,
        partition_values=dict(f.partition_values),
    )


def already_committed(delta: DeltaTable, txn: Txn | None) -> bool:
    """True when ``txn`` is not newer than the application's last commit in this snapshot."""
    if txn is None:
        return False
    done = delta.transaction_version(txn.app_id)
    return done is not None and done >= txn.version


def check_inside(files: Sequence[DataFile], wanted: list[dict[str, str | None]]) -> None:
    """Check that every new file of a partition overwrite lies in one of the ``wanted`` partitions.

    delta-rs would commit such files without complaint, silently adding rows to
    partitions the overwrite was not meant to touch.

    Raises:
        PartitionFilterError: a file lies outside ``wanted``.
    """
    for f in files:
        if f.partition_values not in wanted:
            raise PartitionFilterError(
                f"overwrite of partitions {wanted} would add {f.path} in partition {f.partition_values}; "
                "include that partition in the overwrite or drop those rows"
            )
