"""Delta Lake tables on delta-rs, used by every layer.

Every write, from Arrow or from Spark, takes the same path: Parquet data files
are written into the table's own partition directories, then one Delta
transaction commits them (``add`` actions with partition values and min/max/null
statistics read from the Parquet footers). Spark executors write the files in
parallel; the driver commits. Spark's ``delta-spark`` jars are not needed
(DESIGN §6).

Partition directories are named with Spark's escaping (``a:b`` → ``a%3Ab``), so
Spark can read a snapshot through its file list with ``basePath`` and infer the
same partition values that the Delta log holds.

Traps of delta-rs 1.6.6 handled here (each has a test):
  * ``AddAction.path`` takes the raw relative path; delta-rs URL-encodes it.
  * ``get_add_actions()`` returns URL-encoded paths; removes are built from the
    decoded path, or they commit and remove nothing.
  * an overwrite whose new files lie outside its partition filter is accepted by
    delta-rs; :meth:`Table.commit_files` rejects it.
  * a repeated or lower ``txn`` version is accepted by delta-rs; it is checked
    here against the same snapshot the commit goes through, so a concurrent
    stale writer fails with :class:`ConcurrentCommitError`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

if TYPE_CHECKING:  # pyspark is imported lazily: the speed layer never needs it
    from pyspark.sql import DataFrame, SparkSession

WriteMode = Literal["append", "overwrite"]
#: Directory name Hive and Spark use for a null partition value.
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
#: Where Spark jobs stage their output before it is moved into the table.
STAGING_DIR = "_staging"
#: Key of the custom commit metadata that records which lambdaflow operation made a commit.
OPERATION_KEY = "lambdaflow.operation"
#: Strings longer than this get no min/max statistics (truncated stats would need care; absent stats are always safe).
MAX_STRING_STAT = 64


class TableError(RuntimeError):
    """Base of the errors raised by the table layer."""


class PartitionFilterError(TableError):
    """An overwrite tried to add files outside the partitions it replaces."""


class ConcurrentCommitError(TableError):
    """Another writer committed first (for example a second instance of the same pipeline)."""


class TableMissingError(TableError):
    """No Delta table exists at the location."""


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
        return AddAction(
            path=self.path,
            size=self.size,
            partition_values=self.partition_values,
            modification_time=self.modification_time,
            data_change=True,
            stats=self.stats,
        )


# --------------------------------------------------------------------------- partition paths

# Spark's ExternalCatalogUtils.escapePathName escapes these characters (and ASCII controls).
_SPARK_ESCAPED = set('"#%\'*/:=?\\\x7f{[]^') | {chr(c) for c in range(1, 32)}


def escape_partition_value(value: str) -> str:
    """Escape a partition value for a directory name exactly as Spark does."""
    return "".join(f"%{ord(c):02X}" if c in _SPARK_ESCAPED else c for c in value)


def unescape_partition_value(text: str) -> str:
    """Invert :func:`escape_partition_value` (Spark's ``unescapePathName``)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%" and _is_hex(text[i + 1 : i + 3]):
            out.append(chr(int(text[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _is_hex(s: str) -> bool:
    return len(s) == 2 and all(ch in "0123456789abcdefABCDEF" for ch in s)


def partition_dir(partition_by: Sequence[str], values: Mapping[str, str | None]) -> str:
    """The relative directory of a partition, ``col=value/...``, Spark-escaped."""
    parts = []
    for col in partition_by:
        value = values[col]
        parts.append(f"{escape_partition_value(col)}={NULL_PARTITION if value is None else escape_partition_value(value)}")
    return "/".join(parts)


def parse_partition_dir(relative_path: str, partition_by: Sequence[str]) -> dict[str, str | None]:
    """Read partition values back from a relative file path written by Spark or by this module."""
    values: dict[str, str | None] = {}
    for segment in relative_path.split("/")[:-1]:
        if "=" not in segment:
            continue
        key, _, raw = segment.partition("=")
        key = unescape_partition_value(key)
        if key in partition_by:
            values[key] = None if raw == NULL_PARTITION else unescape_partition_value(raw)
    missing = [c for c in partition_by if c not in values]
    if missing:
        raise TableError(f"{relative_path}: no directory for partition column(s) {missing}")
    return values


def serialize_partition_value(value: Any) -> str | None:
    """A Python value as the Delta protocol writes it in ``partitionValues``."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------- statistics


def _stat_value(value: Any, arrow_type: pa.DataType) -> Any:
    """A footer min/max as Delta stats JSON wants it, or None when it must be left out."""
    if value is None:
        return None
    if pa.types.is_timestamp(arrow_type):
        if isinstance(value, int):  # raw INT64 micros
            value = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=value)
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat(timespec="microseconds") + "Z"
    if pa.types.is_date(arrow_type):
        return value.isoformat()
    if pa.types.is_floating(arrow_type):
        return value if math.isfinite(value) else None
    if pa.types.is_integer(arrow_type):
        return int(value)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        return value if len(value) <= MAX_STRING_STAT else None
    return None  # booleans, binary, decimals, nested: no min/max (always safe)


def footer_stats(metadata: pq.FileMetaData) -> tuple[int, str]:
    """Delta statistics (numRecords, minValues, maxValues, nullCount) from a Parquet footer.

    Returns:
        The row count and the statistics as JSON.
    """
    schema = metadata.schema.to_arrow_schema()
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for col_index, arrow_field in enumerate(schema):
        if pa.types.is_nested(arrow_field.type):
            continue
        lo = hi = None
        null_count: int | None = 0
        complete = True
        for rg in range(metadata.num_row_groups):
            column = metadata.row_group(rg).column(col_index)
            stats = column.statistics
            if stats is None:
                complete, null_count = False, None
                break
            if stats.has_null_count and null_count is not None:
                null_count += stats.null_count
            else:
                null_count = None
            if metadata.row_group(rg).num_rows == (stats.null_count if stats.has_null_count else -1):
                continue  # an all-null row group has no min/max and needs none
            if not stats.has_min_max:
                complete = False
                continue
            lo = stats.min if lo is None or stats.min < lo else lo
            hi = stats.max if hi is None or stats.max > hi else hi
        if null_count is not None:
            nulls[arrow_field.name] = null_count
        if complete and lo is not None:
            lo_v, hi_v = _stat_value(lo, arrow_field.type), _stat_value(hi, arrow_field.type)
            if lo_v is not None and hi_v is not None:
                mins[arrow_field.name], maxs[arrow_field.name] = lo_v, hi_v
    stats_json = json.dumps(
        {"numRecords": metadata.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls},
        separators=(",", ":"),
    )
    return metadata.num_rows, stats_json


# --------------------------------------------------------------------------- schema helpers


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    """The Arrow schema a Delta table stores: microsecond UTC timestamps, plain strings."""
    fields = []
    for f in schema:
        t = f.type
        if pa.types.is_timestamp(t):
            t = pa.timestamp("us", tz="UTC")  # Delta `timestamp`: microseconds, UTC
        elif pa.types.is_large_string(t) or pa.types.is_string_view(t):
            t = pa.string()
        elif pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
            t = pa.binary()
        fields.append(pa.field(f.name, t, f.nullable))
    return pa.schema(fields)


def _conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast ``data`` to the table schema (column order, types)."""
    missing = [n for n in schema.names if n not in data.column_names]
    if missing:
        raise TableError(f"data lacks column(s) {missing} of the table schema")
    columns = []
    for f in schema:
        col = data.column(f.name)
        if pa.types.is_timestamp(f.type) and pa.types.is_timestamp(col.type) and col.type.tz is None:
            col = col.cast(pa.timestamp(col.type.unit, tz="UTC"))  # naive timestamps are taken as UTC
        columns.append(col.cast(f.type))
    return pa.table(columns, schema=schema)


#: Arrow type predicates and the Spark DDL type each maps to (first match wins).
_SPARK_TYPES: tuple[tuple[Any, str], ...] = (
    (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "STRING"),
    (pa.types.is_int64, "BIGINT"),
    (pa.types.is_int32, "INT"),
    (pa.types.is_int16, "SMALLINT"),
    (pa.types.is_int8, "TINYINT"),
    (pa.types.is_float64, "DOUBLE"),
    (pa.types.is_float32, "FLOAT"),
    (pa.types.is_boolean, "BOOLEAN"),
    (lambda t: pa.types.is_timestamp(t) and t.tz is not None, "TIMESTAMP"),
    (pa.types.is_timestamp, "TIMESTAMP_NTZ"),
    (pa.types.is_date, "DATE"),
    (lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t), "BINARY"),
)


def _spark_type(t: pa.DataType) -> str:
    """A Spark SQL DDL type for an Arrow type."""
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    for matches, name in _SPARK_TYPES:
        if matches(t):
            return name
    raise TableError(f"no Spark type for Arrow type {t}")


def spark_ddl(schema: pa.Schema) -> str:
    """A Spark DDL schema string (``a STRING, b BIGINT``) for an Arrow schema."""
    return ", ".join(f"`{f.name}` {_spark_type(f.type)}" for f in schema)


# --------------------------------------------------------------------------- snapshot


@dataclass(frozen=True)
class Snapshot:
    """One version of a table: its schema and its live data files.

    Read a snapshot through its file list only: the table directory also holds
    removed and uncommitted files.
    """

    table: Table
    version: int
    schema: pa.Schema
    partition_by: tuple[str, ...]
    files: tuple[DataFile, ...]
    _delta: DeltaTable = field(repr=False, compare=False)

    @property
    def uris(self) -> list[str]:
        """Absolute URIs of the live data files."""
        return [self.table.file_uri(f.path) for f in self.files]

    @property
    def num_records(self) -> int:
        return sum(f.num_records for f in self.files)

    def to_arrow(self, columns: Sequence[str] | None = None, filter: pc.Expression | None = None) -> pa.Table:
        """The snapshot's rows as an Arrow table (partition columns included)."""
        dataset = self._delta.to_pyarrow_dataset()
        result = dataset.to_table(columns=list(columns) if columns else None, filter=filter)
        return _conform(result, pa.schema([self.schema.field(c) for c in (columns or self.schema.names)]))

    def txn_version(self, app_id: str) -> int | None:
        """The application's last ``txn`` version in this snapshot."""
        return self._delta.transaction_version(app_id)

    def to_arrow_dataset(self) -> Any:
        """A lazy ``pyarrow.dataset`` over exactly this snapshot's files, partition columns included."""
        return self._delta.to_pyarrow_dataset()

    def to_spark(self, spark: SparkSession) -> DataFrame:
        """The snapshot's rows as a Spark DataFrame, read from its file list.

        Partition values come from the directory names (``basePath``), typed by
        the table schema.
        """
        ddl = spark_ddl(self.schema)
        if not self.files:
            return spark.createDataFrame([], ddl)
        reader = spark.read.schema(ddl).option("basePath", self.table.uri)
        # Spark puts partition columns last; restore the table's column order
        return reader.parquet(*self.uris).select(*[f"`{c}`" for c in self.schema.names])


# --------------------------------------------------------------------------- table


class Table:
    """A Delta table at a URI (``file://…`` or ``hdfs://…``).

    Args:
        uri: the table root.
        storage_options: passed to delta-rs (credentials, HDFS settings).
    """

    def __init__(self, uri: str, storage_options: dict[str, str] | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.storage_options = storage_options
        self._fs, self._root = pafs.FileSystem.from_uri(self.uri)

    def __repr__(self) -> str:
        return f"Table({self.uri!r})"

    # -- paths

    def file_uri(self, relative_path: str) -> str:
        """The absolute location of a file given its relative, undecoded path."""
        return f"{self.uri}/{relative_path}"

    def _abs(self, relative_path: str) -> str:
        return f"{self._root}/{relative_path}"

    # -- metadata

    def exists(self) -> bool:
        return DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options)

    def _delta(self, version: int | None = None) -> DeltaTable:
        try:
            return DeltaTable(self.uri, version=version, storage_options=self.storage_options)
        except TableNotFoundError as exc:
            raise TableMissingError(f"no Delta table at {self.uri}") from exc

    def version(self) -> int:
        return self._delta().version()

    def partition_by(self) -> tuple[str, ...]:
        return tuple(self._delta().metadata().partition_columns)

    def schema(self) -> pa.Schema:
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
        schema, partition_by = _layout(delta)
        actions = pa.table(delta.get_add_actions(flatten=True))
        files = []
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

        Raises:
            TableError: a table exists with another schema or partitioning.
        """
        schema = normalize_schema(schema)
        if self.exists():
            current = self.snapshot()
            if current.schema != schema or current.partition_by != tuple(partition_by):
                raise TableError(
                    f"{self.uri} exists with schema {current.schema} partitioned by {list(current.partition_by)}, "
                    f"not {schema} partitioned by {list(partition_by)}"
                )
            return current.version
        create_table_with_add_actions(
            self.uri,
            DeltaSchema.from_arrow(schema),
            [],
            mode="error",
            partition_by=list(partition_by) or None,
            name=name,
            description=description,
            configuration=dict(configuration) if configuration else None,
            storage_options=self.storage_options,
        )
        return 0

    # -- writing files

    def write_files(self, data: pa.Table, schema: pa.Schema, partition_by: Sequence[str]) -> list[DataFile]:
        """Write ``data`` as Parquet files into the table's partition directories (not committed)."""
        data = _conform(data, schema)
        if data.num_rows == 0:
            return []
        data_cols = [n for n in schema.names if n not in partition_by]
        files = []
        for values, part in _split_by_partition(data, partition_by):
            rel_dir = partition_dir(partition_by, values)
            rel = f"{rel_dir}/part-{uuid.uuid4().hex}.parquet" if rel_dir else f"part-{uuid.uuid4().hex}.parquet"
            if rel_dir:
                self._fs.create_dir(self._abs(rel_dir), recursive=True)
            pq.write_table(part.select(data_cols), self._abs(rel), filesystem=self._fs, coerce_timestamps="us")
            files.append(self._describe(rel, partition_by))
        return files

    def _describe(self, rel: str, partition_by: Sequence[str], values: dict[str, str | None] | None = None) -> DataFile:
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

        Returns:
            The new version, or ``skipped=True`` when ``txn`` was already committed.

        Raises:
            PartitionFilterError: an overwrite adds a file outside ``partitions``.
            ConcurrentCommitError: another writer committed conflicting work first.
        """
        delta = _delta or self._delta()
        if _already_committed(delta, txn):
            return CommitResult(delta.version(), skipped=True)
        schema, partition_by = _layout(delta)
        actions: list[AddAction | RemoveAction] = [f.to_add() for f in files]
        if mode == "overwrite" and partitions is not None:
            wanted = [{c: serialize_partition_value(p[c]) for c in partition_by} for p in partitions]
            _check_inside(files, wanted)
            if not wanted:
                return CommitResult(delta.version())
            # delta-rs takes one conjunction as the overwrite predicate: remove the
            # other partitions ourselves, in the same commit, via append + removes.
            actions += [_remove(f) for f in self._live_files(delta) if f.partition_values in wanted]
            mode = "append"
        elif mode == "overwrite" and remove:
            raise TableError("'remove' goes with mode='append'; an overwrite removes by itself")
        actions += [_remove(f) for f in remove]
        custom = dict(metadata or {})
        if operation:
            custom[OPERATION_KEY] = operation
        props = CommitProperties(
            custom_metadata=custom or None,
            app_transactions=[Transaction(txn.app_id, txn.version)] if txn else None,
            max_commit_retries=None,
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
        """
        return self._write_then_commit(
            lambda delta: self.write_files(data, *_layout(delta)), mode, partitions, txn, metadata, operation
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
        if _already_committed(delta, txn):
            return CommitResult(delta.version(), skipped=True)
        files = produce(delta)
        try:
            return self.commit_files(files, mode, partitions=partitions, txn=txn, metadata=metadata, operation=operation, _delta=delta)
        except TableError:
            self._delete_quietly(files)
            raise

    def append(self, data: pa.Table, **kwargs: Any) -> CommitResult:
        """Append Arrow rows (see :meth:`write`)."""
        return self.write(data, "append", **kwargs)

    def overwrite(self, data: pa.Table, partitions: Sequence[Mapping[str, Any]] | None = None, **kwargs: Any) -> CommitResult:
        """Replace the whole table, or the given partitions, with ``data`` in one commit."""
        return self.write(data, "overwrite", partitions=partitions, **kwargs)

    def remove_files(self, files: Iterable[DataFile], **kwargs: Any) -> CommitResult:
        """Remove whole data files in one commit (rows stay readable at older versions)."""
        return self.commit_files([], "append", remove=list(files), **kwargs)

    def delete_rows(self, predicate: pc.Expression, **kwargs: Any) -> CommitResult:
        """Delete the rows matching ``predicate`` in one commit.

        Files entirely matched are removed; files partly matched are rewritten
        with their surviving rows (same partition directory).
        """
        delta = self._delta()
        snap = self._snapshot_of(delta)
        doomed, rewritten = [], []
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
        data = pq.read_table(self._abs(f.path), filesystem=self._fs)
        n = data.num_rows
        for col in snap.partition_by:
            value = f.partition_values[col]
            arr = pa.array([value] * n, pa.string())
            data = data.append_column(col, _parse_partition_array(arr, snap.schema.field(col).type))
        return _conform(data, snap.schema)

    def _delete_quietly(self, files: Iterable[DataFile]) -> None:
        for f in files:
            try:
                self._fs.delete_file(self._abs(f.path))
            except OSError:
                pass

    # -- Spark

    def write_spark(
        self,
        frame: DataFrame,
        mode: WriteMode = "append",
        *,
        partitions: Sequence[Mapping[str, Any]] | None = None,
        txn: Txn | None = None,
        metadata: Mapping[str, Any] | None = None,
        operation: str | None = None,
    ) -> CommitResult:
        """Write a Spark DataFrame: executors write Parquet, the driver commits (see :meth:`stage_spark`)."""
        return self._write_then_commit(lambda delta: self.stage_spark(frame, delta), mode, partitions, txn, metadata, operation)

    def stage_spark(self, frame: DataFrame, delta: DeltaTable | None = None) -> list[DataFile]:
        """Write a Spark DataFrame as data files of this table, not yet committed.

        Spark's output is staged under ``_staging/<id>/``, then moved into the
        table's partition directories and described from the Parquet footers.
        Until :meth:`commit_files` they are invisible to readers; if the job dies
        first, vacuum removes them.
        """
        delta = delta or self._delta()
        schema, partition_by = _layout(delta)
        stage_rel = f"{STAGING_DIR}/{uuid.uuid4().hex}"
        ordered = frame.select(*[f"`{c}`" for c in schema.names])
        writer = ordered.write.mode("error").option("compression", "snappy")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.parquet(self.file_uri(stage_rel))
        files = []
        try:
            for rel in self._staged_parquet(stage_rel):
                target = rel[len(stage_rel) + 1 :]
                target_dir = target.rsplit("/", 1)[0] if "/" in target else ""
                if target_dir:
                    self._fs.create_dir(self._abs(target_dir), recursive=True)
                self._fs.move(self._abs(rel), self._abs(target))
                files.append(self._describe(target, partition_by))
        except Exception:
            self._delete_quietly(files)
            raise
        finally:
            self._fs.delete_dir_contents(self._abs(stage_rel), missing_dir_ok=True)
            if self._exists(stage_rel):
                self._fs.delete_dir(self._abs(stage_rel))
        return files

    def _exists(self, rel: str) -> bool:
        return self._fs.get_file_info(self._abs(rel)).type != pafs.FileType.NotFound

    def _staged_parquet(self, stage_rel: str) -> list[str]:
        selector = pafs.FileSelector(self._abs(stage_rel), recursive=True)
        out = []
        for info in self._fs.get_file_info(selector):
            name = info.base_name
            if info.type == pafs.FileType.File and name.endswith(".parquet") and not name.startswith(("_", ".")):
                out.append(info.path[len(self._root) + 1 :])
        return sorted(out)

    # -- maintenance

    def compact(self, target_size: int | None = None) -> dict[str, Any]:
        """Merge small files (delta-rs optimize); data unchanged, one commit."""
        return self._delta().optimize.compact(target_size=target_size)

    def checkpoint(self) -> None:
        """Write a Delta checkpoint so readers need not replay the whole log."""
        self._delta().create_checkpoint()

    def vacuum(self, retention_hours: int = 168, dry_run: bool = False) -> list[str]:
        """Delete files no version newer than the retention needs (and stale staging output)."""
        delta = self._delta()
        removed = delta.vacuum(
            retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=retention_hours >= 168
        )
        if not dry_run and self._exists(STAGING_DIR):
            cutoff = time.time() - retention_hours * 3600
            for info in self._fs.get_file_info(pafs.FileSelector(self._abs(STAGING_DIR))):
                if info.mtime and info.mtime.timestamp() < cutoff:
                    self._fs.delete_dir(info.path)
        return removed


# --------------------------------------------------------------------------- internals


def _already_committed(delta: DeltaTable, txn: Txn | None) -> bool:
    """True when ``txn`` is not newer than the application's last commit in this snapshot."""
    if txn is None:
        return False
    done = delta.transaction_version(txn.app_id)
    return done is not None and done >= txn.version


def _layout(delta: DeltaTable) -> tuple[pa.Schema, tuple[str, ...]]:
    """A snapshot's schema (normalised) and partition columns."""
    return normalize_schema(pa.schema(delta.schema().to_arrow())), tuple(delta.metadata().partition_columns)


def _remove(f: DataFile) -> RemoveAction:
    # The path must be the decoded one (DataFile.path), or the remove matches nothing.
    return RemoveAction(
        path=f.path,
        data_change=True,
        deletion_timestamp=int(time.time() * 1000),
        size=f.size,
        partition_values=dict(f.partition_values),
    )


def _check_inside(files: Sequence[DataFile], wanted: list[dict[str, str | None]]) -> None:
    for f in files:
        if f.partition_values not in wanted:
            raise PartitionFilterError(
                f"overwrite of partitions {wanted} would add {f.path} in partition {f.partition_values}; "
                "include that partition in the overwrite or drop those rows"
            )


def _split_by_partition(data: pa.Table, partition_by: Sequence[str]) -> list[tuple[dict[str, str | None], pa.Table]]:
    """Split rows into one table per distinct partition value tuple."""
    if not partition_by:
        return [({}, data)]
    indexed = data.append_column("__row", pa.array(range(data.num_rows), pa.int64()))
    groups = indexed.group_by(list(partition_by), use_threads=False).aggregate([("__row", "list")])
    out = []
    for row in groups.to_pylist():
        values = {c: serialize_partition_value(row[c]) for c in partition_by}
        out.append((values, data.take(pa.array(row["__row_list"], pa.int64()))))
    return out


def _parse_partition_array(strings: pa.Array, target: pa.DataType) -> pa.Array:
    if pa.types.is_string(target):
        return strings
    if pa.types.is_boolean(target):
        return pc.equal(strings, "true")
    if pa.types.is_timestamp(target):
        return pc.strptime(strings, "%Y-%m-%d %H:%M:%S.%f", unit="us").cast(target) if len(strings) else strings.cast(target)
    return strings.cast(target)
