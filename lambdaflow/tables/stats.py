"""Schemas and statistics: Delta file statistics from Parquet footers, the stored Arrow schema, Spark DDL.

* :func:`footer_stats` builds the ``stats`` JSON of an ``add`` action
  (numRecords, minValues, maxValues, nullCount) from a Parquet footer, so no
  data is read twice. A statistic that cannot be given exactly is left out:
  absent statistics only cost data skipping, wrong ones return wrong rows.
* :func:`normalize_schema` is the Arrow schema a Delta table stores, and
  :func:`conform` casts rows to it.
* :func:`spark_ddl` maps an Arrow schema to a Spark DDL string, so Spark reads
  a snapshot's files with the table's types rather than inferred ones.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lambdaflow.errors import TableError
from lambdaflow.tables.layout import MAX_STRING_STAT

__all__ = ["conform", "footer_stats", "normalize_schema", "spark_ddl"]


# --------------------------------------------------------------------------- statistics


def _stat_value(value: Any, arrow_type: pa.DataType) -> Any:
    """A footer min/max as Delta stats JSON wants it, or None when it must be left out."""
    if value is None:
        return None
    if pa.types.is_timestamp(arrow_type):
        if isinstance(value, int):  # raw INT64 micros
            value = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=value)
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
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

    Args:
        metadata: the footer of one Parquet data file.

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
    fields: list[pa.Field] = []
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


def conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast ``data`` to the table schema (column order, types).

    Raises:
        TableError: ``data`` lacks a column of ``schema``.
    """
    missing = [n for n in schema.names if n not in data.column_names]
    if missing:
        raise TableError(f"data lacks column(s) {missing} of the table schema")
    columns: list[pa.ChunkedArray] = []
    for f in schema:
        col = data.column(f.name)
        if pa.types.is_timestamp(f.type) and pa.types.is_timestamp(col.type) and col.type.tz is None:
            col = col.cast(pa.timestamp(col.type.unit, tz="UTC"))  # naive timestamps are taken as UTC
        columns.append(col.cast(f.type))
    return pa.table(columns, schema=schema)


# --------------------------------------------------------------------------- Spark types

#: Arrow type predicates and the Spark DDL type each maps to (first match wins).
_SPARK_TYPES: tuple[tuple[Callable[[pa.DataType], bool], str], ...] = (
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
    """A Spark SQL DDL type for an Arrow type.

    Raises:
        TableError: no Spark type matches.
    """
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_list(t) or pa.types.is_large_list(t):  # e.g. the feature vectors of predictions
        return f"ARRAY<{_spark_type(t.value_type)}>"
    for matches, name in _SPARK_TYPES:
        if matches(t):
            return name
    raise TableError(f"no Spark type for Arrow type {t}")


def spark_ddl(schema: pa.Schema) -> str:
    """A Spark DDL schema string (``a STRING, b BIGINT``) for an Arrow schema.

    Raises:
        TableError: a column has an Arrow type with no Spark equivalent.
    """
    return ", ".join(f"`{f.name}` {_spark_type(f.type)}" for f in schema)
