"""Where a table's files go: partition directory names, partition values, and the layout constants.

Partition directories are named with Spark's escaping (``a:b`` → ``a%3Ab``), so
Spark can read a snapshot through its file list with ``basePath`` and infer the
same partition values that the Delta log holds. Values in the log are strings
serialised the way the Delta protocol writes ``partitionValues``
(:func:`serialize_partition_value`); :func:`parse_partition_array` turns them
back into typed Arrow columns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.errors import TableError

__all__ = [
    "MAX_STRING_STAT",
    "NULL_PARTITION",
    "OPERATION_KEY",
    "STAGING_DIR",
    "WriteMode",
    "escape_partition_value",
    "parse_partition_array",
    "parse_partition_dir",
    "partition_dir",
    "serialize_partition_value",
    "split_by_partition",
    "unescape_partition_value",
]

WriteMode = Literal["append", "overwrite"]
#: Directory name Hive and Spark use for a null partition value.
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
#: Where Spark jobs stage their output before it is moved into the table.
STAGING_DIR = "_staging"
#: Key of the custom commit metadata that records which lambdaflow operation made a commit.
OPERATION_KEY = "lambdaflow.operation"
#: Strings longer than this get no min/max statistics (truncated stats would need care; absent stats are always safe).
MAX_STRING_STAT = 64

# Spark's ExternalCatalogUtils.escapePathName escapes these characters (and ASCII controls).
_SPARK_ESCAPED = set("\"#%'*/:=?\\\x7f{[]^") | {chr(c) for c in range(1, 32)}


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
    """The relative directory of a partition, ``col=value/...``, Spark-escaped.

    Args:
        partition_by: the table's partition columns, in order.
        values: partition column → serialised value (None for null).

    Returns:
        The directory relative to the table root; empty for an unpartitioned table.
    """
    parts: list[str] = []
    for col in partition_by:
        value = values[col]
        parts.append(f"{escape_partition_value(col)}={NULL_PARTITION if value is None else escape_partition_value(value)}")
    return "/".join(parts)


def parse_partition_dir(relative_path: str, partition_by: Sequence[str]) -> dict[str, str | None]:
    """Read partition values back from a relative file path written by Spark or by this package.

    Args:
        relative_path: a data file's path relative to the table root.
        partition_by: the table's partition columns.

    Returns:
        Partition column → serialised value (None for null).

    Raises:
        TableError: the path has no directory for some partition column.
    """
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
        naive = value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo is not None else value
        return naive.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def split_by_partition(data: pa.Table, partition_by: Sequence[str]) -> list[tuple[dict[str, str | None], pa.Table]]:
    """Split rows into one table per distinct partition value tuple.

    Returns:
        (serialised partition values, rows) pairs; one pair with no values for an unpartitioned table.
    """
    if not partition_by:
        return [({}, data)]
    indexed = data.append_column("__row", pa.array(range(data.num_rows), pa.int64()))
    groups = indexed.group_by(list(partition_by), use_threads=False).aggregate([("__row", "list")])
    out: list[tuple[dict[str, str | None], pa.Table]] = []
    for row in groups.to_pylist():
        values = {c: serialize_partition_value(row[c]) for c in partition_by}
        out.append((values, data.take(pa.array(row["__row_list"], pa.int64()))))
    return out


def parse_partition_array(strings: pa.Array, target: pa.DataType) -> pa.Array:
    """Serialised partition values (see :func:`serialize_partition_value`) as an Arrow array of ``target`` type."""
    if pa.types.is_string(target):
        return strings
    if pa.types.is_boolean(target):
        return pc.equal(strings, "true")
    if pa.types.is_timestamp(target):
        return pc.strptime(strings, "%Y-%m-%d %H:%M:%S.%f", unit="us").cast(target) if len(strings) else strings.cast(target)
    return strings.cast(target)
