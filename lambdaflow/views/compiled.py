"""A view bound to the event schema: its state columns, schemas and the entry points of every backend.

:class:`CompiledView` derives, from a :class:`~lambdaflow.config.ViewSpec`, what
all three layers must agree on — the state columns and how each merges, the
state and result schemas, the group columns. Its backend methods are thin:
each delegates to :mod:`lambdaflow.views.arrow`, :mod:`lambdaflow.views.spark`
or :mod:`lambdaflow.views.sql`, so callers keep one object per view whatever
layer they are in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from lambdaflow.schemas import BUCKET, event_schema
from lambdaflow.views import arrow as _arrow
from lambdaflow.views import spark as _spark
from lambdaflow.views import sql as _sql

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from lambdaflow.config import EventsSpec, PipelineConfig, ViewSpec

__all__ = ["CompiledView", "MergeKind", "StateColumn", "StatePart", "compile_views"]

#: How a state column merges (docs/architecture.md §4 (merge rule)); ``last`` pairs with a ``max`` time column.
MergeKind = Literal["sum", "min", "max", "last"]
#: Which part of an aggregate's state a column holds (the ``<part>`` of ``<aggregate>__<part>``).
StatePart = Literal["count", "sum", "min", "max", "n", "sumsq", "last_time", "last"]


@dataclass(frozen=True)
class StateColumn:
    """One column of a view's partial state and how it merges."""

    name: str
    merge: MergeKind
    type: pa.DataType
    source: str | None  # the event column it reads (None for count)
    part: StatePart


class CompiledView:
    """A view definition bound to the event schema, with its three compiled forms."""

    def __init__(self, spec: ViewSpec, events: EventsSpec) -> None:
        """Bind ``spec`` to the event schema of ``events`` (state and result types follow the event fields)."""
        self.spec = spec
        self.name = spec.name
        self.events = events
        self.event_schema = event_schema(events)
        self.time_column = events.time_column

    # ------------------------------------------------------------------ shape

    @property
    def bucketed(self) -> bool:
        """Whether the view groups by a time bucket as well as by its keys."""
        return self.spec.bucket is not None

    @property
    def group_columns(self) -> list[str]:
        """Keys, then the bucket start for bucketed views."""
        return list(self.spec.keys) + ([BUCKET] if self.bucketed else [])

    @cached_property
    def states(self) -> list[StateColumn]:
        """The state columns of every aggregate, in declaration order (``<aggregate>__<part>``)."""
        out: list[StateColumn] = []
        for agg_name, agg in self.spec.aggregates.items():
            col = agg.column
            ctype = self.event_schema.field(col).type if col else None
            f64, i64 = pa.float64(), pa.int64()
            parts_by_fn: dict[str, list[tuple[str, MergeKind, pa.DataType, StatePart]]] = {
                "count": [("count", "sum", i64, "count")],
                "sum": [("sum", "sum", f64, "sum")],
                "min": [("min", "min", ctype, "min")],
                "max": [("max", "max", ctype, "max")],
                "mean": [("n", "sum", i64, "n"), ("sum", "sum", f64, "sum")],
                "variance": [("n", "sum", i64, "n"), ("sum", "sum", f64, "sum"), ("sumsq", "sum", f64, "sumsq")],
                "stddev": [("n", "sum", i64, "n"), ("sum", "sum", f64, "sum"), ("sumsq", "sum", f64, "sumsq")],
                "last": [("last_time", "max", pa.timestamp("us", tz="UTC"), "last_time"), ("last", "last", ctype, "last")],
            }
            out += [StateColumn(f"{agg_name}__{suffix}", merge, typ, col, part) for suffix, merge, typ, part in parts_by_fn[agg.fn]]
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
                t = self.event_schema.field(agg.column).type
            else:
                t = pa.float64()
            fields.append(pa.field(name, t))
        return pa.schema(fields)

    # ------------------------------------------------------------------ Arrow (speed layer)

    def _arrow_filter(self, table: pa.Table) -> pa.Table:
        """The rows of ``table`` that pass every filter of the view."""
        return _arrow.arrow_filter(self, table)

    def partials_arrow(self, events: pa.Table) -> pa.Table:
        """Partial state per (keys, bucket) of a batch of events; see :func:`lambdaflow.views.arrow.partials_arrow`."""
        return _arrow.partials_arrow(self, events)

    def merge_arrow(self, partials: Sequence[pa.Table]) -> pa.Table:
        """Merge partial rows (from any layer) into one row per (keys, bucket); see :func:`lambdaflow.views.arrow.merge_arrow`."""
        return _arrow.merge_arrow(self, partials)

    def finalize_arrow(self, states: pa.Table) -> pa.Table:
        """Finalised aggregate values from merged state rows; see :func:`lambdaflow.views.arrow.finalize_arrow`."""
        return _arrow.finalize_arrow(self, states)

    def finalize_columns(self, state: Callable[[str], Any], names: Sequence[str]) -> dict[str, Any]:
        """Finalise the named aggregates from state columns, given as ``state(column_name) -> array``."""
        return _arrow.finalize_columns(self, state, names)

    # ------------------------------------------------------------------ Spark (batch layer)

    def partials_spark(self, events: DataFrame) -> DataFrame:
        """Partial state per (keys, bucket) computed by Spark; see :func:`lambdaflow.views.spark.partials_spark`."""
        return _spark.partials_spark(self, events)

    # ------------------------------------------------------------------ SQL (serving layer)

    def merge_sql(self, source: str) -> str:
        """SQL (Trino dialect) merging partial rows of ``source`` (a relation or subquery) per group."""
        return _sql.merge_sql(self, source)

    def finalize_sql(self, merged: str) -> str:
        """SQL (Trino dialect) turning merged state rows of ``merged`` into aggregate values."""
        return _sql.finalize_sql(self, merged)


def compile_views(pipeline: PipelineConfig) -> dict[str, CompiledView]:
    """Every declared view of a pipeline, compiled, by name."""
    return {v.name: CompiledView(v, pipeline.events) for v in pipeline.views}
