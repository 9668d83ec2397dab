"""A view declared once, compiled three ways.

A :class:`~lambdaflow.config.ViewSpec` names key columns, an optional time bucket
and mergeable aggregates. Each aggregate is kept as *state columns* that merge
by ``sum``, ``min`` or ``max`` (DESIGN §3):

=========  ====================================  ===========================
aggregate  state columns                          finalised as
=========  ====================================  ===========================
count      ``<a>__count``                         count
sum        ``<a>__sum``                           sum (null over no values)
min / max  ``<a>__min`` / ``<a>__max``            min / max
mean       ``<a>__n``, ``<a>__sum``               sum / n
variance   ``<a>__n``, ``<a>__sum``, ``<a>__sumsq``  sample variance (n > 1)
stddev     as variance                            its square root
last       ``<a>__last_time``, ``<a>__last``      value at the latest event time
=========  ====================================  ===========================

``last`` ignores null values; among values at the same latest time the
greatest wins, so every merge order gives the same answer.

The three compiled forms:

* :meth:`CompiledView.partials_spark` — batch layer, Spark column expressions;
* :meth:`CompiledView.partials_arrow`, :meth:`CompiledView.merge_arrow`,
  :meth:`CompiledView.finalize_arrow` — speed layer, vectorised Arrow compute;
* :meth:`CompiledView.merge_sql`, :meth:`CompiledView.finalize_sql` — serving
  layer, SQL in Trino's dialect (DuckDB runs it after transpiling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.config import EventsSpec, FilterSpec, PipelineConfig, ViewSpec
from lambdaflow.schemas import BUCKET, event_schema

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

MergeKind = Literal["sum", "min", "max", "last"]


@dataclass(frozen=True)
class StateColumn:
    """One column of a view's partial state and how it merges."""

    name: str
    merge: MergeKind
    type: pa.DataType
    source: str | None  # the event column it reads (None for count)
    part: Literal["count", "sum", "min", "max", "n", "sumsq", "last_time", "last"]


def quote(identifier: str) -> str:
    """A SQL identifier, double-quoted (valid in Trino and DuckDB)."""
    return '"' + identifier.replace('"', '""') + '"'


class CompiledView:
    """A view definition bound to the event schema, with its three compiled forms."""

    def __init__(self, spec: ViewSpec, events: EventsSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.events = events
        self.event_schema = event_schema(events)
        self.time_column = events.time_column

    # ------------------------------------------------------------------ shape

    @property
    def bucketed(self) -> bool:
        return self.spec.bucket is not None

    @property
    def group_columns(self) -> list[str]:
        """Keys, then the bucket start for bucketed views."""
        return list(self.spec.keys) + ([BUCKET] if self.bucketed else [])

    @cached_property
    def states(self) -> list[StateColumn]:
        out: list[StateColumn] = []
        for agg_name, agg in self.spec.aggregates.items():
            col = agg.column
            ctype = self.event_schema.field(col).type if col else None
            f64, i64 = pa.float64(), pa.int64()
            parts: list[tuple[str, MergeKind, pa.DataType, str]] = {
                "count": [("count", "sum", i64, "count")],
                "sum": [("sum", "sum", f64, "sum")],
                "min": [("min", "min", ctype, "min")],
                "max": [("max", "max", ctype, "max")],
                "mean": [("n", "sum", i64, "n"), ("sum", "sum", f64, "sum")],
                "variance": [("n", "sum", i64, "n"), ("sum", "sum", f64, "sum"), ("sumsq", "sum", f64, "sumsq")],
                "stddev": [("n", "sum", i64, "n"), ("sum", "sum", f64, "sum"), ("sumsq", "sum", f64, "sumsq")],
                "last": [("last_time", "max", pa.timestamp("us", tz="UTC"), "last_time"), ("last", "last", ctype, "last")],
            }[agg.fn]
            out += [StateColumn(f"{agg_name}__{suffix}", merge, typ, col, part) for suffix, merge, typ, part in parts]  # type: ignore[arg-type]
        return out

    @cached_property
    def state_schema(self) -> pa.Schema:
        """Schema of partial rows: group columns, then state columns."""
        fields = [self.event_schema.field(k) for k in self.spec.keys]
        if self.bucketed:
            fields.append(pa.field(BUCKET, pa.timestamp("us", tz="UTC")))
        fields += [pa.field(s.name, s.type) for s in self.states]
        return pa.schema(fields)

    @cached_property
    def result_schema(self) -> pa.Schema:
        """Schema of finalised rows: group columns, then one column per aggregate."""
        fields = list(self.state_schema)[: len(self.group_columns)]
        for name, agg in self.spec.aggregates.items():
            if agg.fn == "count":
                t: pa.DataType = pa.int64()
            elif agg.fn in ("min", "max", "last"):
                t = self.event_schema.field(agg.column).type  # type: ignore[arg-type]
            else:
                t = pa.float64()
            fields.append(pa.field(name, t))
        return pa.schema(fields)

    # ------------------------------------------------------------------ Arrow (speed layer)

    def _arrow_filter(self, table: pa.Table) -> pa.Table:
        for flt in self.spec.filters:
            table = table.filter(arrow_predicate(flt, self.event_schema.field(flt.column).type))
        return table

    def partials_arrow(self, events: pa.Table) -> pa.Table:
        """Partial state per (keys, bucket) of a batch of events."""
        t = self._arrow_filter(events)
        columns: dict[str, pa.ChunkedArray | pa.Array] = {k: t.column(k) for k in self.spec.keys}
        if self.bucketed:
            columns[BUCKET] = bucket_start_arrow(t.column(self.time_column), self.spec.bucket)  # type: ignore[arg-type]
        aggs: list[tuple[str, str]] = []
        sort_keys: list[tuple[str, str]] = []
        for s in self.states:
            src = t.column(s.source) if s.source else None
            if s.part == "count":
                columns[s.name] = pa.array([1] * t.num_rows, pa.int64())
                aggs.append((s.name, "sum"))
            elif s.part == "sum":
                columns[s.name] = pc.cast(src, pa.float64())
                aggs.append((s.name, "sum"))
            elif s.part == "sumsq":
                v = pc.cast(src, pa.float64())
                columns[s.name] = pc.multiply(v, v)
                aggs.append((s.name, "sum"))
            elif s.part == "n":
                columns[s.name] = pc.cast(pc.is_valid(src), pa.int64())
                aggs.append((s.name, "sum"))
            elif s.part in ("min", "max"):
                columns[s.name] = src
                aggs.append((s.name, s.part))
            elif s.part == "last_time":
                columns[s.name] = pc.if_else(pc.is_valid(src), t.column(self.time_column), None)
                aggs.append((s.name, "max"))
                sort_keys.append((s.name, "ascending"))
            elif s.part == "last":
                columns[s.name] = src
                aggs.append((s.name, "last"))
                sort_keys.append((s.name, "ascending"))
        frame = pa.table(columns)
        return self._group(frame, aggs, sort_keys)

    def _group(self, frame: pa.Table, aggs: list[tuple[str, str]], sort_keys: list[tuple[str, str]]) -> pa.Table:
        if sort_keys:  # 'last' takes the last non-null value in (time, value) order
            frame = frame.sort_by(sort_keys) if frame.num_rows else frame
        options = {"sum": pc.ScalarAggregateOptions(skip_nulls=True, min_count=1), "last": pc.ScalarAggregateOptions(skip_nulls=True)}
        spec = [(col, fn, options[fn]) if fn in options else (col, fn) for col, fn in aggs]
        grouped = frame.group_by(self.group_columns, use_threads=not sort_keys).aggregate(spec)
        renamed = grouped.rename_columns([_strip_agg_suffix(n, aggs) for n in grouped.column_names])
        return renamed.select(self.state_schema.names).cast(self.state_schema)

    def merge_arrow(self, partials: Sequence[pa.Table]) -> pa.Table:
        """Merge partial rows (from any layer) into one row per (keys, bucket)."""
        frame = pa.concat_tables([p.select(self.state_schema.names).cast(self.state_schema) for p in partials])
        aggs = [(s.name, "sum" if s.merge == "sum" else s.merge) for s in self.states]
        sort_keys = [(s.name, "ascending") for s in self.states if s.part in ("last_time", "last")]
        return self._group(frame, aggs, sort_keys)

    def finalize_arrow(self, states: pa.Table) -> pa.Table:
        """Finalised aggregate values from merged state rows."""
        out: dict[str, Any] = {c: states.column(c) for c in self.group_columns}
        out.update(self.finalize_columns(states.column, list(self.spec.aggregates)))
        return pa.table(out).cast(self.result_schema)

    def finalize_columns(self, state: Any, names: Sequence[str]) -> dict[str, Any]:
        """Finalise the named aggregates from state columns, given as ``state(column_name) -> array``."""
        out: dict[str, Any] = {}
        for name in names:
            agg = self.spec.aggregates[name]
            col = lambda part: state(f"{name}__{part}")  # noqa: E731
            if agg.fn in ("count", "sum", "min", "max", "last"):
                out[name] = col(agg.fn)
            elif agg.fn == "mean":
                n = pc.cast(col("n"), pa.float64())
                out[name] = pc.if_else(pc.greater(n, 0), pc.divide(col("sum"), n), None)
            else:
                var = _variance_arrow(col("n"), col("sum"), col("sumsq"))
                out[name] = pc.sqrt(var) if agg.fn == "stddev" else var
        return out

    # ------------------------------------------------------------------ Spark (batch layer)

    def partials_spark(self, events: DataFrame) -> DataFrame:
        """Partial state per (keys, bucket) computed by Spark."""
        from pyspark.sql import functions as F

        df = events
        for flt in self.spec.filters:
            df = df.where(_spark_predicate(flt))
        groups: list[Column] = [F.col(_bq(k)) for k in self.spec.keys]
        if self.bucketed:
            groups.append(bucket_start_spark(F.col(_bq(self.time_column)), self.spec.bucket).alias(BUCKET))  # type: ignore[arg-type]
        exprs: list[Column] = []
        lasts: dict[str, str] = {}
        for s in self.states:
            src = F.col(_bq(s.source)) if s.source else None
            if s.part == "count":
                exprs.append(F.count(F.lit(1)).cast("bigint").alias(s.name))
            elif s.part == "sum":
                exprs.append(F.sum(src.cast("double")).alias(s.name))
            elif s.part == "sumsq":
                exprs.append(F.sum(src.cast("double") * src.cast("double")).alias(s.name))
            elif s.part == "n":
                exprs.append(F.count(src).cast("bigint").alias(s.name))
            elif s.part in ("min", "max"):
                exprs.append(getattr(F, s.part)(src).alias(s.name))
            elif s.part == "last":
                # max of (time, value) over non-null values: the latest, ties to the greatest
                packed = F.max(F.when(src.isNotNull(), F.struct(F.col(_bq(self.time_column)).alias("t"), src.alias("v"))))
                exprs.append(packed.alias(f"{s.name}__packed"))
                lasts[s.name] = s.name.removesuffix("__last")
        grouped = df.groupBy(*groups).agg(*exprs)
        cols: list[Column] = []
        for s in self.states:
            if s.part == "last_time":
                cols.append(F.col(f"`{s.name.removesuffix('_time')}__packed`.t").alias(s.name))
            elif s.part == "last":
                cols.append(F.col(f"`{s.name}__packed`.v").alias(s.name))
            else:
                cols.append(F.col(_bq(s.name)))
        return grouped.select(*[F.col(_bq(c)) for c in self.group_columns], *cols)

    # ------------------------------------------------------------------ SQL (serving layer)

    def merge_sql(self, source: str) -> str:
        """SQL (Trino dialect) merging partial rows of ``source`` (a relation or subquery) per group."""
        groups = [quote(c) for c in self.group_columns]
        last_pairs = [(s, next(t for t in self.states if t.name == s.name + "_time")) for s in self.states if s.part == "last"]
        window = ""
        if last_pairs:
            partition = f"PARTITION BY {', '.join(groups)}" if groups else ""
            window = ", " + ", ".join(f"MAX({quote(t.name)}) OVER ({partition}) AS {quote(t.name + '__max')}" for _, t in last_pairs)
        selects = list(groups)
        for s in self.states:
            if s.merge == "last":
                t = s.name + "_time"
                selects.append(f"MAX(CASE WHEN {quote(t)} = {quote(t + '__max')} THEN {quote(s.name)} END) AS {quote(s.name)}")
            elif s.merge == "sum":  # keep the state's type (DuckDB widens SUM(BIGINT) to HUGEINT)
                sql_type = "BIGINT" if pa.types.is_integer(s.type) else "DOUBLE"
                selects.append(f"CAST(SUM({quote(s.name)}) AS {sql_type}) AS {quote(s.name)}")
            else:
                selects.append(f"{s.merge.upper()}({quote(s.name)}) AS {quote(s.name)}")
        group_by = f"\nGROUP BY {', '.join(groups)}" if groups else ""
        return f"SELECT {', '.join(selects)}\nFROM (SELECT *{window} FROM ({source}) AS partials) AS windowed{group_by}"

    def finalize_sql(self, merged: str) -> str:
        """SQL (Trino dialect) turning merged state rows of ``merged`` into aggregate values."""
        selects = [quote(c) for c in self.group_columns]
        for name, agg in self.spec.aggregates.items():
            q = lambda part: quote(f"{name}__{part}")  # noqa: E731
            if agg.fn in ("count", "sum", "min", "max", "last"):
                part = {"count": "count", "sum": "sum", "min": "min", "max": "max", "last": "last"}[agg.fn]
                expr = q(part)
            elif agg.fn == "mean":
                expr = f"CASE WHEN {q('n')} > 0 THEN {q('sum')} / CAST({q('n')} AS DOUBLE) END"
            else:
                var = (
                    f"CASE WHEN {q('n')} > 1 THEN GREATEST(({q('sumsq')} - {q('sum')} * {q('sum')} / CAST({q('n')} AS DOUBLE))"
                    f" / CAST({q('n')} - 1 AS DOUBLE), 0.0) END"
                )
                expr = f"SQRT({var})" if agg.fn == "stddev" else var
            selects.append(f"{expr} AS {quote(name)}")
        return f"SELECT {', '.join(selects)}\nFROM ({merged}) AS merged"


def compile_views(pipeline: PipelineConfig) -> dict[str, CompiledView]:
    """Every declared view of a pipeline, compiled."""
    return {v.name: CompiledView(v, pipeline.events) for v in pipeline.views}


# ---------------------------------------------------------------------- helpers


def bucket_start_arrow(times: pa.ChunkedArray | pa.Array, seconds: int) -> pa.ChunkedArray | pa.Array:
    """Floor event times to their bucket (buckets aligned on the Unix epoch)."""
    micros = pc.cast(times, pa.int64())
    width = seconds * 1_000_000
    floored = pc.subtract(micros, _pmod(micros, width))
    return pc.cast(floored, pa.timestamp("us", tz="UTC"))


def _pmod(values: Any, width: int) -> Any:
    rem = pc.subtract(values, pc.multiply(pc.divide(values, width), width))  # truncating division
    return pc.if_else(pc.less(rem, 0), pc.add(rem, width), rem)


def bucket_start_spark(times: Column, seconds: int) -> Column:
    """Spark twin of :func:`bucket_start_arrow`."""
    from pyspark.sql import functions as F

    micros = F.unix_micros(times)
    return F.timestamp_micros(micros - F.pmod(micros, F.lit(seconds * 1_000_000)))


def _variance_arrow(n: Any, s: Any, sq: Any) -> Any:
    nf = pc.cast(n, pa.float64())
    var = pc.divide(pc.subtract(sq, pc.divide(pc.multiply(s, s), nf)), pc.subtract(nf, 1.0))
    var = pc.max_element_wise(var, 0.0)  # rounding can push a zero variance below 0
    return pc.if_else(pc.greater(nf, 1.0), var, None)


def _strip_agg_suffix(name: str, aggs: list[tuple[str, str]]) -> str:
    for col, fn in aggs:
        if name == f"{col}_{fn}":
            return col
    return name


def _bq(name: str) -> str:
    return f"`{name}`"


def arrow_predicate(flt: FilterSpec, ctype: pa.DataType) -> pc.Expression:
    field = pc.field(flt.column)
    values = flt.value if isinstance(flt.value, list) else [flt.value]
    scalars = [pa.scalar(v).cast(ctype) for v in values]
    if flt.op == "in":
        return field.isin(pa.array([s.as_py() for s in scalars], ctype))
    if flt.op == "not in":
        return ~field.isin(pa.array([s.as_py() for s in scalars], ctype)) & field.is_valid()
    ops = {"==": "__eq__", "!=": "__ne__", "<": "__lt__", "<=": "__le__", ">": "__gt__", ">=": "__ge__"}
    return getattr(field, ops[flt.op])(scalars[0])


def _spark_predicate(flt: FilterSpec) -> Column:
    from pyspark.sql import functions as F

    col = F.col(_bq(flt.column))
    if flt.op == "in":
        return col.isin(list(flt.value))  # type: ignore[arg-type]
    if flt.op == "not in":
        return ~col.isin(list(flt.value)) & col.isNotNull()  # type: ignore[arg-type]
    ops = {"==": "__eq__", "!=": "__ne__", "<": "__lt__", "<=": "__le__", ">": "__gt__", ">=": "__ge__"}
    return getattr(col, ops[flt.op])(flt.value)
