"""The Spark backend of a view: partial state as Spark column expressions (batch layer).

:func:`partials_spark` computes the same partial rows as
:func:`lambdaflow.views.arrow.partials_arrow`, so batch and speed partials merge
into one answer. pyspark is imported inside the functions only: this module is
imported with the rest of :mod:`lambdaflow.views`, and the speed layer, which
imports that package, must never import pyspark.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lambdaflow.schemas import BUCKET

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from lambdaflow.config import FilterSpec
    from lambdaflow.views.compiled import CompiledView

__all__ = ["bucket_start_spark", "partials_spark"]


def partials_spark(view: CompiledView, events: DataFrame) -> DataFrame:
    """Partial state per (keys, bucket) computed by Spark.

    Args:
        view: the compiled view.
        events: event rows with (at least) the view's keys, time column and source columns.

    Returns:
        One row per group: the group columns, then the state columns in the view's state-schema order.
    """
    from pyspark.sql import functions as F

    df = events
    for flt in view.spec.filters:
        df = df.where(_spark_predicate(flt))
    groups: list[Column] = [F.col(_bq(k)) for k in view.spec.keys]
    if view.bucketed:
        groups.append(bucket_start_spark(F.col(_bq(view.time_column)), view.spec.bucket).alias(BUCKET))  # type: ignore[arg-type]
    exprs: list[Column] = []
    for s in view.states:
        if s.source is None:  # only 'count' reads no column
            exprs.append(F.count(F.lit(1)).cast("bigint").alias(s.name))
            continue
        src = F.col(_bq(s.source))
        if s.part == "sum":
            exprs.append(F.sum(src.cast("double")).alias(s.name))
        elif s.part == "sumsq":
            exprs.append(F.sum(src.cast("double") * src.cast("double")).alias(s.name))
        elif s.part == "n":
            exprs.append(F.count(src).cast("bigint").alias(s.name))
        elif s.part in ("min", "max"):
            exprs.append(getattr(F, s.part)(src).alias(s.name))
        elif s.part == "last":
            # max of (time, value) over non-null values: the latest, ties to the greatest;
            # 'last_time' adds no expression, it is unpacked from this struct below
            packed = F.max(F.when(src.isNotNull(), F.struct(F.col(_bq(view.time_column)).alias("t"), src.alias("v"))))
            exprs.append(packed.alias(f"{s.name}__packed"))
    grouped = df.groupBy(*groups).agg(*exprs)
    # unpack each (time, value) struct into the two state columns of 'last'
    cols: list[Column] = []
    for s in view.states:
        if s.part == "last_time":
            cols.append(F.col(f"`{s.name.removesuffix('_time')}__packed`.t").alias(s.name))
        elif s.part == "last":
            cols.append(F.col(f"`{s.name}__packed`.v").alias(s.name))
        else:
            cols.append(F.col(_bq(s.name)))
    return grouped.select(*[F.col(_bq(c)) for c in view.group_columns], *cols)


def bucket_start_spark(times: Column, seconds: int) -> Column:
    """Spark twin of :func:`lambdaflow.views.arrow.bucket_start_arrow`: floor times to buckets aligned on the Unix epoch.

    Args:
        times: a timestamp column.
        seconds: the bucket width.

    Returns:
        The start of each time's bucket, as a timestamp column.
    """
    from pyspark.sql import functions as F

    micros = F.unix_micros(times)
    return F.timestamp_micros(micros - F.pmod(micros, F.lit(seconds * 1_000_000)))


def _bq(name: str) -> str:
    """A Spark column reference, backquoted so names with dots or spaces are taken literally."""
    return f"`{name}`"


def _spark_predicate(flt: FilterSpec) -> Column:
    """A view filter as a Spark column; ``not in`` excludes null values, as in Arrow and SQL."""
    from pyspark.sql import functions as F

    col = F.col(_bq(flt.column))
    if flt.op == "in":
        return col.isin(list(flt.value))  # type: ignore[arg-type]
    if flt.op == "not in":
        return ~col.isin(list(flt.value)) & col.isNotNull()  # type: ignore[arg-type]
    ops = {"==": "__eq__", "!=": "__ne__", "<": "__lt__", "<=": "__le__", ">": "__gt__", ">=": "__ge__"}
    return getattr(col, ops[flt.op])(flt.value)
