"""A view declared once, compiled three ways.

A :class:`~lambdaflow.config.ViewSpec` names key columns, an optional time bucket
and mergeable aggregates. Each aggregate is kept as *state columns* that merge
by ``sum``, ``min`` or ``max`` (docs/architecture.md §4 (merge rule)):

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

The three compiled forms, one module each, all reached through
:class:`CompiledView` (:mod:`lambdaflow.views.compiled`):

* :meth:`CompiledView.partials_spark` — batch layer, Spark column expressions
  (:mod:`lambdaflow.views.spark`; pyspark is imported only when called);
* :meth:`CompiledView.partials_arrow`, :meth:`CompiledView.merge_arrow`,
  :meth:`CompiledView.finalize_arrow` — speed layer, vectorised Arrow compute
  (:mod:`lambdaflow.views.arrow`);
* :meth:`CompiledView.merge_sql`, :meth:`CompiledView.finalize_sql` — serving
  layer, SQL in Trino's dialect, which DuckDB runs after transpiling
  (:mod:`lambdaflow.views.sql`).
"""

from __future__ import annotations

from lambdaflow.views.arrow import arrow_predicate, bucket_start_arrow
from lambdaflow.views.compiled import CompiledView, MergeKind, StateColumn, StatePart, compile_views
from lambdaflow.views.spark import bucket_start_spark
from lambdaflow.views.sql import quote

__all__ = [
    "CompiledView",
    "MergeKind",
    "StateColumn",
    "StatePart",
    "arrow_predicate",
    "bucket_start_arrow",
    "bucket_start_spark",
    "compile_views",
    "quote",
]
