"""The Arrow backend of a view: partial state, merge and finalisation in vectorised Arrow compute.

The speed layer builds partial rows of each micro-batch with :func:`partials_arrow`,
merges them into the running state with :func:`merge_arrow` (whatever layer the
partial rows came from) and reads values with :func:`finalize_arrow` or, for a
few aggregates at a time, :func:`finalize_columns`. Buckets are floored with
:func:`bucket_start_arrow`, the twin of :func:`lambdaflow.views.spark.bucket_start_spark`,
so both layers put an event in the same bucket.

This module never imports pyspark: the speed layer runs without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.schemas import BUCKET

if TYPE_CHECKING:
    from lambdaflow.config import FilterSpec
    from lambdaflow.views.compiled import CompiledView

__all__ = [
    "arrow_filter",
    "arrow_predicate",
    "bucket_start_arrow",
    "finalize_arrow",
    "finalize_columns",
    "merge_arrow",
    "partials_arrow",
]


def arrow_filter(view: CompiledView, table: pa.Table) -> pa.Table:
    """The rows of ``table`` that pass every filter of the view (filters are AND-ed)."""
    for flt in view.spec.filters:
        table = table.filter(arrow_predicate(flt, view.event_schema.field(flt.column).type))
    return table


def partials_arrow(view: CompiledView, events: pa.Table) -> pa.Table:
    """Partial state per (keys, bucket) of a batch of events.

    Args:
        view: the compiled view.
        events: event rows with (at least) the view's keys, time column and source columns.

    Returns:
        One row per group, with the view's :attr:`~lambdaflow.views.CompiledView.state_schema`.
    """
    t = arrow_filter(view, events)
    columns: dict[str, pa.ChunkedArray | pa.Array] = {k: t.column(k) for k in view.spec.keys}
    if view.bucketed:
        columns[BUCKET] = bucket_start_arrow(t.column(view.time_column), view.spec.bucket)  # type: ignore[arg-type]
    aggs: list[tuple[str, str]] = []
    sort_keys: list[tuple[str, str]] = []
    for s in view.states:
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
            # the time only counts where the value is present: 'last' ignores null values
            columns[s.name] = pc.if_else(pc.is_valid(src), t.column(view.time_column), None)
            aggs.append((s.name, "max"))
            sort_keys.append((s.name, "ascending"))
        elif s.part == "last":
            columns[s.name] = src
            aggs.append((s.name, "last"))
            sort_keys.append((s.name, "ascending"))
    frame = pa.table(columns)
    return _group(view, frame, aggs, sort_keys)


def merge_arrow(view: CompiledView, partials: Sequence[pa.Table]) -> pa.Table:
    """Merge partial rows (from any layer) into one row per (keys, bucket).

    Args:
        view: the compiled view.
        partials: tables of partial rows; extra columns are dropped and types cast to the state schema.

    Returns:
        One merged row per group, with the view's state schema.
    """
    frame = pa.concat_tables([p.select(view.state_schema.names).cast(view.state_schema) for p in partials])
    aggs = [(s.name, "sum" if s.merge == "sum" else s.merge) for s in view.states]
    sort_keys = [(s.name, "ascending") for s in view.states if s.part in ("last_time", "last")]
    return _group(view, frame, aggs, sort_keys)


def finalize_arrow(view: CompiledView, states: pa.Table) -> pa.Table:
    """Finalised aggregate values from merged state rows.

    Returns:
        The group columns, then one column per aggregate, with the view's result schema.
    """
    out: dict[str, Any] = {c: states.column(c) for c in view.group_columns}
    out.update(finalize_columns(view, states.column, list(view.spec.aggregates)))
    return pa.table(out).cast(view.result_schema)


def finalize_columns(view: CompiledView, state: Callable[[str], Any], names: Sequence[str]) -> dict[str, Any]:
    """Finalise the named aggregates from state columns.

    Args:
        view: the compiled view.
        state: gives the array of a state column by name, ``state(column_name) -> array``.
        names: the aggregates to finalise.

    Returns:
        The finalised array of each named aggregate.
    """
    out: dict[str, Any] = {}
    for name in names:
        agg = view.spec.aggregates[name]
        if agg.fn in ("count", "sum", "min", "max", "last"):  # the state column is the value
            out[name] = state(f"{name}__{agg.fn}")
        elif agg.fn == "mean":
            n = pc.cast(state(f"{name}__n"), pa.float64())
            out[name] = pc.if_else(pc.greater(n, 0), pc.divide(state(f"{name}__sum"), n), None)
        else:
            var = _variance_arrow(state(f"{name}__n"), state(f"{name}__sum"), state(f"{name}__sumsq"))
            out[name] = pc.sqrt(var) if agg.fn == "stddev" else var
    return out


def _group(view: CompiledView, frame: pa.Table, aggs: Sequence[tuple[str, str]], sort_keys: Sequence[tuple[str, str]]) -> pa.Table:
    """Aggregate ``frame`` per group column and cast the result to the state schema."""
    if sort_keys:  # 'last' takes the last non-null value in (time, value) order
        frame = frame.sort_by(sort_keys) if frame.num_rows else frame
    options = {"sum": pc.ScalarAggregateOptions(skip_nulls=True, min_count=1), "last": pc.ScalarAggregateOptions(skip_nulls=True)}
    spec = [(col, fn, options[fn]) if fn in options else (col, fn) for col, fn in aggs]
    # 'last' depends on row order, which threaded grouping does not keep
    grouped = frame.group_by(view.group_columns, use_threads=not sort_keys).aggregate(spec)
    renamed = grouped.rename_columns([_strip_agg_suffix(n, aggs) for n in grouped.column_names])
    return renamed.select(view.state_schema.names).cast(view.state_schema)


def bucket_start_arrow(times: pa.ChunkedArray | pa.Array, seconds: int) -> pa.ChunkedArray | pa.Array:
    """Floor event times to their bucket (buckets aligned on the Unix epoch).

    Args:
        times: timestamps (any unit Arrow casts to microseconds).
        seconds: the bucket width.

    Returns:
        The start of each time's bucket, as ``timestamp[us, UTC]``.
    """
    micros = pc.cast(times, pa.int64())
    width = seconds * 1_000_000
    floored = pc.subtract(micros, _pmod(micros, width))
    return pc.cast(floored, pa.timestamp("us", tz="UTC"))


def _pmod(values: Any, width: int) -> Any:
    """Non-negative remainder, like Spark's ``pmod``, so times before 1970 floor downwards too."""
    rem = pc.subtract(values, pc.multiply(pc.divide(values, width), width))  # truncating division
    return pc.if_else(pc.less(rem, 0), pc.add(rem, width), rem)


def _variance_arrow(n: Any, s: Any, sq: Any) -> Any:
    """Sample variance from count, sum and sum of squares; null below two values."""
    nf = pc.cast(n, pa.float64())
    var = pc.divide(pc.subtract(sq, pc.divide(pc.multiply(s, s), nf)), pc.subtract(nf, 1.0))
    var = pc.max_element_wise(var, 0.0)  # rounding can push a zero variance below 0
    return pc.if_else(pc.greater(nf, 1.0), var, None)


def _strip_agg_suffix(name: str, aggs: Sequence[tuple[str, str]]) -> str:
    """Undo the ``<column>_<fn>`` names Arrow's ``group_by().aggregate()`` gives its outputs."""
    for col, fn in aggs:
        if name == f"{col}_{fn}":
            return col
    return name


def arrow_predicate(flt: FilterSpec, ctype: pa.DataType) -> pc.Expression:
    """A view filter as an Arrow expression, its values cast to the column's type.

    ``not in`` excludes null values, as SQL and Spark do.

    Args:
        flt: the filter.
        ctype: the Arrow type of the filtered column.

    Returns:
        An expression for :meth:`pyarrow.Table.filter`.

    Raises:
        pyarrow.ArrowException: a filter value cannot be cast to the column's type.
    """
    field = pc.field(flt.column)
    values = flt.value if isinstance(flt.value, list) else [flt.value]
    scalars = [pa.scalar(v).cast(ctype) for v in values]
    if flt.op == "in":
        return field.isin(pa.array([s.as_py() for s in scalars], ctype))
    if flt.op == "not in":
        return ~field.isin(pa.array([s.as_py() for s in scalars], ctype)) & field.is_valid()
    ops = {"==": "__eq__", "!=": "__ne__", "<": "__lt__", "<=": "__le__", ">": "__gt__", ">=": "__ge__"}
    return getattr(field, ops[flt.op])(scalars[0])
