"""The SQL backend of a view: merge and finalisation as SQL in Trino's dialect (serving layer).

:func:`merge_sql` merges partial rows by the rule of docs/architecture.md §4
(merge rule) — ``sum``, ``min``, ``max``, and ``last`` as the value at the
latest time — and :func:`finalize_sql` turns merged states into aggregate
values, with the same formulas as the Arrow backend. Trino runs the text as
is; the embedded DuckDB engine runs it after transpiling with sqlglot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from lambdaflow.views.compiled import CompiledView

__all__ = ["finalize_sql", "merge_sql", "quote"]


def quote(identifier: str) -> str:
    """A SQL identifier, double-quoted (valid in Trino and DuckDB)."""
    return '"' + identifier.replace('"', '""') + '"'


def merge_sql(view: CompiledView, source: str) -> str:
    """SQL (Trino dialect) merging partial rows of ``source`` per group.

    Args:
        view: the compiled view.
        source: a relation or subquery yielding partial rows (it is placed inside ``FROM (...)``).

    Returns:
        A ``SELECT`` yielding one merged row per group, with the view's state columns.
    """
    groups = [quote(c) for c in view.group_columns]
    last_pairs = [(s, next(t for t in view.states if t.name == s.name + "_time")) for s in view.states if s.part == "last"]
    # 'last' keeps the value at the group's latest time: a window finds that time before grouping
    window = ""
    if last_pairs:
        partition = f"PARTITION BY {', '.join(groups)}" if groups else ""
        window = ", " + ", ".join(f"MAX({quote(t.name)}) OVER ({partition}) AS {quote(t.name + '__max')}" for _, t in last_pairs)
    selects = list(groups)
    for s in view.states:
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


def finalize_sql(view: CompiledView, merged: str) -> str:
    """SQL (Trino dialect) turning merged state rows of ``merged`` into aggregate values.

    Args:
        view: the compiled view.
        merged: a relation or subquery yielding merged state rows, e.g. :func:`merge_sql`'s (placed inside ``FROM (...)``).

    Returns:
        A ``SELECT`` yielding the group columns, then one column per aggregate.
    """
    selects = [quote(c) for c in view.group_columns]
    for name, agg in view.spec.aggregates.items():
        if agg.fn in ("count", "sum", "min", "max", "last"):  # the state column is the value
            expr = quote(f"{name}__{agg.fn}")
        else:
            n, total, sumsq = (quote(f"{name}__{part}") for part in ("n", "sum", "sumsq"))
            if agg.fn == "mean":
                expr = f"CASE WHEN {n} > 0 THEN {total} / CAST({n} AS DOUBLE) END"
            else:
                # sample variance, clamped at 0 because rounding can push a zero variance below it
                var = (
                    f"CASE WHEN {n} > 1 THEN GREATEST(({sumsq} - {total} * {total} / CAST({n} AS DOUBLE))"
                    f" / CAST({n} - 1 AS DOUBLE), 0.0) END"
                )
                expr = f"SQRT({var})" if agg.fn == "stddev" else var
        selects.append(f"{expr} AS {quote(name)}")
    return f"SELECT {', '.join(selects)}\nFROM ({merged}) AS merged"
