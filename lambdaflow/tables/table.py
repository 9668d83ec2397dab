"""The :class:`Table` handle: open, create, read snapshots, write Parquet files and commit them.

Every write goes through :meth:`Table.commit_files`: data files are written
into the table's partition directories first (:meth:`Table.write_files`, or
:func:`lambdaflow.tables.spark.stage_spark` for Spark), then one Delta
transaction commits them. :meth:`Table._write_then_commit` ties the two
together so the ``txn`` check, the files and the commit all use one snapshot.

Long because the commit protocol (check, write, commit through one snapshot; removes and
row deletes on the same path) is one unit; the Spark path and maintenance live apart.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from lambdaflow.contracts.paths import filesystem, join
from lambdaflow.errors import ConcurrentCommitError, TableError, TableMissingError
from lambdaflow.tables.actions import CommitResult, DataFile, Head, Txn, already_committed, check_inside, remove_action
from lambdaflow.tables.layout import (
    OPERATION_KEY,
    WriteMode,
    parse_partition_array,
    parse_partition_dir,
    partition_dir,
    serialize_partition_value,
    split_by_partition,
)
from lambdaflow.tables.snapshot import Snapshot
from lambdaflow.tables.stats import conform, footer_stats, normalize_schema

__all__ = ["Table", "delta_layout"]


#: Table properties every table is created with (a caller's ``configuration`` overrides them).
#: ``delta.checkpointInterval``: every writer and reader replays the JSON commits since the last checkpoint,
#: so each append costs more the further the checkpoint lies behind. The speed layer appends to six or
#: more tables per micro-batch; at the Delta default of 100 an append averaged 29 ms, at 10 about 15 ms,
#: and a micro-batch's commits at 5,000 events/s went from 123 ms to 71 ms.
DEFAULT_CONFIGURATION: dict[str, str] = {"delta.checkpointInterval": "10"}


class Table:
    """A Delta table at a URI (``file://…`` or ``hdfs://…``).

    Args:
        uri: the table root.
        storage_options: passed to delta-rs (credentials, HDFS settings).
    """

    def __init__(self, uri: str, storage_options: dict[str, str] | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.storage_options = storage_options
        self._fs, self._root = filesystem(self.uri)

    def __repr__(self) -> str:
        return f"Table({self.uri!r})"

    # -- paths

    def file_uri(self, relative_path: str) -> str:
        """The absolute location of a file given its relative, undecoded path."""
        return f"{self.uri}/{relative_path}"

    def _abs(self, relative_path: str) -> str:
        """The path of a file on :attr:`_fs` (no scheme)."""
        return join(self._root, relative_path)

    def _exists(self, relative_path: str) -> bool:
        return bool(self._fs.get_file_info(self._abs(relative_path)).type != pafs.FileType.NotFound)

    # -- metadata

    def exists(self) -> bool:
        """True when a Delta table exists at the URI."""
        return DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options)

    def _delta(self, version: int | None = None) -> DeltaTable:
        """A fresh delta-rs handle on the table at ``version`` (default: latest).

        Raises:
            TableMissingError: there is no table at the URI.
        """
        try:
            return DeltaTable(self.uri, version=version, storage_options=self.storage_options)
        except TableNotFoundError as exc:
            raise TableMissingError(f"no Delta table at {self.uri}") from exc

    def version(self) -> int:
        """The latest version.

        Raises:
            TableMissingError: there is no table at the URI.
        """
        return self._delta().version()

    def partition_by(self) -> tuple[str, ...]:
        """The partition columns.

        Raises:
            TableMissingError: there is no table at the URI.
        """
        return tuple(self._delta().metadata().partition_columns)

    def schema(self) -> pa.Schema:
        """The latest schema, normalised (see :func:`lambdaflow.tables.stats.normalize_schema`).

        Raises:
            TableMissingError: there is no table at the URI.
        """
        return normalize_schema(pa.schema(self._delta().schema().to_arrow()))

    def txn_version(self, app_id: str) -> int | None:
        """The last committed ``txn`` version of an application, or None."""
        return self._delta().transaction_version(app_id)

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Commit infos, newest first (operation, timestamp, version, custom metadata)."""
        return self._delta().history(limit)

    def snapshot(self, version: int | None = None) -> Snapshot:
        """The table at ``version`` (default: latest) with its live file list.

        Raises:
            TableMissingError: there is no table at the URI.
        """
        delta = self._delta(version)
        return self._snapshot_of(delta)

    def _snapshot_of(self, delta: DeltaTable) -> Snapshot:
        schema, partition_by = delta_layout(delta)
        actions = pa.table(delta.get_add_actions(flatten=True))
        files: list[DataFile] = []
        for row in actions.to_pylist():
            path = urllib.parse.unquote(row["path"])  # get_add_actions() returns URL-encoded paths
            pvals = {c: serialize_partition_value(row.get(f"partition.{c}")) for c in partition_by}
            files.append(
                DataFile(
                    path=path,
                    size=int(row["size_bytes"]),
                    partition_values=pvals,
                    num_records=int(row.get("num_records") or 0),
                    stats="",
                    modification_time=int(row["modification_time"].timestamp() * 1000)
                    if isinstance(row["modification_time"], dt.datetime)
                    else int(row["modification_time"]),
                )
            )
        return Snapshot(self, delta.version(), schema, partition_by, tuple(files), delta)

    # -- creation

    def create(
        self,
        schema: pa.Schema,
        partition_by: Sequence[str] = (),
        *,
        name: str | None = None,
        description: str | None = None,
        configuration: Mapping[str, str] | None = None,
    ) -> int:
        """Create an empty table (no-op if it already exists with this schema).

        Returns:
            The table's version: 0 when created, the latest version when it already existed.

        Raises:
            TableError: a table exists with another schema or partitioning.
        """
        schema = normalize_schema(schema)
        if not self.exists():
            try:
                create_table_with_add_actions(
                    self.uri,
                    DeltaSchema.from_arrow(schema),
                    [],
                    mode="error",
                    partition_by=list(partition_by) or None,
                    name=name,
                    description=description,
                    configuration={**DEFAULT_CONFIGURATION, **(configuration or {})},
                    storage_options=self.storage_options,
                )
                return 0
            except DeltaError:
                if not self.exists():
                    raise
                # another process created it in between (instances starting together): check it like any existing one
        current = self.snapshot()
        if current.schema != schema or current.partition_by != tuple(partition_by):
            raise TableError(
                f"{self.uri} exists with schema {current.schema} partitioned by {list(current.partition_by)}, "
                f"not {schema} partitioned by {list(partition_by)}"
            )
        return current.version

    # -- writing files

    def write_files(self, data: pa.Table, schema: pa.Schema, partition_by: Sequence[str]) -> list[DataFile]:
        """Write ``data`` as Parquet files into the table's partition directories (not committed).

        Raises:
            TableError: ``data`` lacks a column of ``schema``.
        """
        data = conform(data, schema)
        if data.num_rows == 0:
            return []
        data_cols = [n for n in schema.names if n not in partition_by]
        files: list[DataFile] = []
        for values, part in split_by_partition(data, partition_by):
            rel_dir = partition_dir(partition_by, values)
            rel = f"{rel_dir}/part-{uuid.uuid4().hex}.parquet" if rel_dir else f"part-{uuid.uuid4().hex}.parquet"
            if rel_dir:
                self._fs.create_dir(self._abs(rel_dir), recursive=True)
            pq.write_table(part.select(data_cols), self._abs(rel), filesystem=self._fs, coerce_timestamps="us")
            files.append(self._describe(rel, partition_by))
        return files

    def _describe(self, rel: str, partition_by: Sequence[str], values: dict[str, str | None] | None = None) -> DataFile:
        """A :class:`DataFile` for a written file: size and time from storage, statistics from its footer."""
        info = self._fs.get_file_info(self._abs(rel))
        with self._fs.open_input_file(self._abs(rel)) as handle:
            metadata = pq.ParquetFile(handle).metadata
        num, stats = footer_stats(metadata)
        return DataFile(
            path=rel,
            size=int(info.size),
            partition_values=values if values is not None else parse_partition_dir(rel, partition_by),
            num_records=num,
            stats=stats,
            modification_time=int(info.mtime.timestamp() * 1000) if info.mtime else int(time.time() * 1000),
        )

    def _delete_quietly(self, files: Iterable[DataFile]) -> None:
        """Delete files that will never be committed; one already gone is no error."""
        for f in files:
            try:
                self._fs.delete_file(self._abs(f.path))
            except OSError:
                pass

    # -- committing

    def commit_files(
        self,
        files: Sequence[DataFile],
        mode: WriteMode = "append",
        *,
        partitions: Sequence[Mapping[str, Any]] | None = None,
        remove: Sequence[DataFile] = (),
        txn: Txn | None = None,
        metadata: Mapping[str, Any] | None = None,
        operation: str | None = None,
        _delta: DeltaTable | None = None,
        _exact: bool = False,
    ) -> CommitResult:
        """Commit written data files in one transaction.

        Args:
            files: files already in the table directory.
            mode: ``append`` adds; ``overwrite`` replaces the whole table, or only
                ``partitions`` when given.
            partitions: with ``overwrite``, the partitions to replace, each a
                mapping of partition column → value. Every new file must lie in one.
            remove: with ``append``, live files to remove in the same commit.
            txn: commit only if this application version is newer than the last one committed.
            metadata: custom commit metadata (JSON-serialisable).
            operation: a name recorded in the commit metadata.
            _delta: the snapshot to commit through (default: the latest); the
                ``txn`` check uses the same one, so a stale writer fails.
            _exact: commit as the snapshot's next version or not at all (no rebase onto newer commits).

        Returns:
            The new version, or ``skipped=True`` when ``txn`` was already committed.

        Raises:
            PartitionFilterError: an overwrite adds a file outside ``partitions``.
            ConcurrentCommitError: another writer committed conflicting work first.
            TableError: ``remove`` was given with ``overwrite``.
            TableMissingError: there is no table at the URI.
        """
        delta = _delta or self._delta()
        if already_committed(delta, txn):
            return CommitResult(delta.version(), skipped=True)
        schema, partition_by = delta_layout(delta)
        actions: list[AddAction | RemoveAction] = [f.to_add() for f in files]
        if mode == "overwrite" and partitions is not None:
            wanted = [{c: serialize_partition_value(p[c]) for c in partition_by} for p in partitions]
            check_inside(files, wanted)
            if not wanted:
                return CommitResult(delta.version())
            # delta-rs takes one conjunction as the overwrite predicate: remove the
            # other partitions ourselves, in the same commit, via append + removes.
            actions += [remove_action(f) for f in self._live_files(delta) if f.partition_values in wanted]
            mode = "append"
        elif mode == "overwrite" and remove:
            raise TableError("'remove' goes with mode='append'; an overwrite removes by itself")
        actions += [remove_action(f) for f in remove]
        custom = dict(metadata or {})
        if operation:
            custom[OPERATION_KEY] = operation
        props = CommitProperties(
            custom_metadata=custom or None,
            app_transactions=[Transaction(txn.app_id, txn.version)] if txn else None,
            max_commit_retries=0 if _exact else None,
        )
        try:
            delta.create_write_transaction(
                actions,
                mode=mode,
                schema=DeltaSchema.from_arrow(schema),
                partition_by=list(partition_by) or None,
                commit_properties=props,
            )
        except CommitFailedError as exc:
            raise ConcurrentCommitError(f"{self.uri}: a concurrent writer committed first: {exc}") from exc
        delta.update_incremental()  # replay just the new commit rather than reloading the table
        return CommitResult(delta.version())

    def _live_files(self, delta: DeltaTable) -> list[DataFile]:
        return list(self._snapshot_of(delta).files)

    def write(
        self,
        data: pa.Table,
        mode: WriteMode = "append",
        *,
        partitions: Sequence[Mapping[str, Any]] | None = None,
        txn: Txn | None = None,
        metadata: Mapping[str, Any] | None = None,
        operation: str | None = None,
    ) -> CommitResult:
        """Write Arrow rows and commit them in one transaction (see :meth:`commit_files`).

        The ``txn`` check happens before any file is written, against the same
        snapshot the commit goes through.

        Raises:
            PartitionFilterError: an overwrite adds rows outside ``partitions``; the written files are deleted.
            ConcurrentCommitError: another writer committed first; the written files are deleted.
            TableError: ``data`` does not fit the table schema.
        """
        return self._write_then_commit(
            lambda delta: self.write_files(data, *delta_layout(delta)), mode, partitions, txn, metadata, operation
        )

    def _write_then_commit(
        self,
        produce: Callable[[DeltaTable], list[DataFile]],
        mode: WriteMode,
        partitions: Sequence[Mapping[str, Any]] | None,
        txn: Txn | None,
        metadata: Mapping[str, Any] | None,
        operation: str | None,
    ) -> CommitResult:
        """Check ``txn``, write the files, commit them through the same snapshot; files of a refused commit are deleted."""
        delta = self._delta()
        if already_committed(delta, txn):
            return CommitResult(delta.version(), skipped=True)
        files = produce(delta)
        try:
            return self.commit_files(files, mode, partitions=partitions, txn=txn, metadata=metadata, operation=operation, _delta=delta)
        except TableError:
            self._delete_quietly(files)
            raise

    def append_next(
        self,
        build: Callable[[Head], tuple[pa.Table, Txn | None, Mapping[str, Any]]],
        *,
        operation: str | None = None,
        attempts: int = 100,
    ) -> CommitResult:
        """Append as exactly the next version of the table: a compare-and-set on the whole table.

        ``build`` is called with the version read and returns the rows, ``txn`` and commit metadata
        for the version after it; it may raise to refuse (its checks hold for that version only). When
        another writer commits first, nothing is committed and ``build`` runs again on the newer version.

        Raises:
            ConcurrentCommitError: every one of ``attempts`` lost the race.
            TableError: the rows do not fit the table schema.
        """
        for _ in range(attempts):
            delta = self._delta()
            data, txn, metadata = build(Head(delta.version(), delta))
            files = self.write_files(data, *delta_layout(delta))
            try:
                return self.commit_files(files, "append", txn=txn, metadata=metadata, operation=operation, _delta=delta, _exact=True)
            except ConcurrentCommitError:
                self._delete_quietly(files)
                time.sleep(random.uniform(0, 0.02))  # writers that lost together do not race again in step
            except TableError:
                self._delete_quietly(files)
                raise
        raise ConcurrentCommitError(f"{self.uri}: {attempts} attempts to append as the next version lost to other writers")

    def append(self, data: pa.Table, **kwargs: Any) -> CommitResult:
        """Append Arrow rows (see :meth:`write`)."""
        return self.write(data, "append", **kwargs)

    def overwrite(self, data: pa.Table, partitions: Sequence[Mapping[str, Any]] | None = None, **kwargs: Any) -> CommitResult:
        """Replace the whole table, or the given partitions, with ``data`` in one commit (see :meth:`write`)."""
        return self.write(data, "overwrite", partitions=partitions, **kwargs)

    def remove_files(self, files: Iterable[DataFile], **kwargs: Any) -> CommitResult:
        """Remove whole data files in one commit (rows stay readable at older versions)."""
        return self.commit_files([], "append", remove=list(files), **kwargs)

    def delete_rows(self, predicate: pc.Expression, **kwargs: Any) -> CommitResult:
        """Delete the rows matching ``predicate`` in one commit.

        Files entirely matched are removed; files partly matched are rewritten
        with their surviving rows (same partition directory).

        Raises:
            ConcurrentCommitError: another writer committed first.
        """
        delta = self._delta()
        snap = self._snapshot_of(delta)
        doomed: list[DataFile] = []
        rewritten: list[DataFile] = []
        for f in snap.files:
            frame = self._read_file(snap, f)
            keep = frame.filter(~predicate) if frame.num_rows else frame
            if keep.num_rows == frame.num_rows:
                continue
            doomed.append(f)
            if keep.num_rows:
                rewritten += self.write_files(keep, snap.schema, snap.partition_by)
        if not doomed:
            return CommitResult(snap.version)
        return self.commit_files(rewritten, "append", remove=doomed, _delta=delta, **kwargs)

    def _read_file(self, snap: Snapshot, f: DataFile) -> pa.Table:
        """One data file's rows with its partition columns restored from the log, in table order."""
        data = pq.read_table(self._abs(f.path), filesystem=self._fs)
        n = data.num_rows
        for col in snap.partition_by:
            value = f.partition_values[col]
            arr = pa.array([value] * n, pa.string())
            data = data.append_column(col, parse_partition_array(arr, snap.schema.field(col).type))
        return conform(data, snap.schema)


def delta_layout(delta: DeltaTable) -> tuple[pa.Schema, tuple[str, ...]]:
    """A snapshot's schema (normalised) and partition columns."""
    return normalize_schema(pa.schema(delta.schema().to_arrow())), tuple(delta.metadata().partition_columns)
