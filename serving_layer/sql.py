"""The serving layer's SQL, written once in Trino's dialect.

``unified_<view>`` merges the batch rows (as of their watermark W) with the
speed rows whose ``_ingest_seq`` is greater than W, then finalises the
aggregates — the merge rule of docs/architecture.md §4. The embedded engine runs the same
text after :func:`lambdaflow.sql.to_duckdb`.
"""

from __future__ import annotations

import pyarrow as pa

from lambdaflow.config import PipelineConfig
from lambdaflow.contracts.batch import NO_WATERMARK
from lambdaflow.contracts.consistency import CONSISTENCY_VIEW, consistency_schema, consistency_view_sql
from lambdaflow.contracts.paths import FEATURE_CONSISTENCY, MASTER_LABELS, PREDICTIONS, batch_view, speed_view, sql_name
from lambdaflow.schemas import BATCH_WATERMARK, INGEST_SEQ
from lambdaflow.views import CompiledView, compile_views, quote

#: Name of the view exposing each batch view's watermark and the freshest speed batch merged.
FRESHNESS_VIEW = "serving_freshness"


def unified_name(view: str) -> str:
    return f"unified_{view}"


def watermark_sql(view: CompiledView) -> str:
    """W of the published batch view: the SQL form of :func:`lambdaflow.contracts.batch.batch_watermark`."""
    return f"(SELECT COALESCE(MAX({quote(BATCH_WATERMARK)}), {NO_WATERMARK}) FROM {quote(sql_name(batch_view(view.name)))})"


def partial_rows_sql(view: CompiledView, through: int | None = None) -> str:
    """Batch rows as of W, then speed rows after W: the two halves of the merge rule.

    Args:
        through: speed rows of later micro-batches are left out (the online index's complete-prefix cut,
            :func:`lambdaflow.contracts.speed.complete_through`); an integer, never caller input.
    """
    columns = ", ".join(quote(c) for c in view.state_schema.names)
    batch = quote(sql_name(batch_view(view.name)))
    speed = quote(sql_name(speed_view(view.name)))
    cut = "" if through is None else f" AND {quote(INGEST_SEQ)} <= {int(through)}"
    return f"SELECT {columns} FROM {batch}\nUNION ALL\nSELECT {columns} FROM {speed} WHERE {quote(INGEST_SEQ)} > {watermark_sql(view)}{cut}"


def unified_view_sql(view: CompiledView) -> str:
    """The SELECT behind ``unified_<view>``."""
    return view.finalize_sql(view.merge_sql(partial_rows_sql(view)))


def freshness_sql(views: dict[str, CompiledView]) -> str:
    """Per view: the batch watermark W and the freshest speed batch that the unified view merges."""
    parts = []
    for name, view in views.items():
        speed = quote(sql_name(speed_view(name)))
        parts.append(
            f"SELECT '{name}' AS view_name, {watermark_sql(view)} AS batch_watermark, "
            f"(SELECT MAX({quote(INGEST_SEQ)}) FROM {speed}) AS freshest_ingest_seq"
        )
    return "\nUNION ALL\n".join(parts)


def model_performance_sql(pipeline: PipelineConfig) -> str | None:
    """Serving accuracy per model version: predictions joined with the labels that have arrived."""
    labels = pipeline.labels
    if labels is None:
        return None
    ev_id = quote(pipeline.events.id_column)
    lab_id, lab = quote(labels.event_id_column), quote(labels.label_column)
    return (
        'SELECT p."model_version", COUNT(*) AS scored,\n'
        '  SUM(CASE WHEN l."__id" IS NOT NULL THEN 1 ELSE 0 END) AS labelled_positive,\n'
        '  SUM(CASE WHEN p."decision" THEN 1 ELSE 0 END) AS alerts,\n'
        '  SUM(CASE WHEN p."decision" AND l."__id" IS NOT NULL THEN 1 ELSE 0 END) AS true_alerts,\n'
        '  CAST(SUM(CASE WHEN p."decision" AND l."__id" IS NOT NULL THEN 1 ELSE 0 END) AS DOUBLE)'
        ' / NULLIF(SUM(CASE WHEN p."decision" THEN 1 ELSE 0 END), 0) AS precision,\n'
        '  CAST(SUM(CASE WHEN p."decision" AND l."__id" IS NOT NULL THEN 1 ELSE 0 END) AS DOUBLE)'
        ' / NULLIF(SUM(CASE WHEN l."__id" IS NOT NULL THEN 1 ELSE 0 END), 0) AS recall,\n'
        '  AVG(p."score") AS mean_score\n'
        f"FROM {quote(sql_name(PREDICTIONS))} AS p\n"
        f'LEFT JOIN (SELECT DISTINCT {lab_id} AS "__id" FROM {quote(sql_name(MASTER_LABELS))} WHERE {lab}) AS l\n'
        f'  ON p.{ev_id} = l."__id"\n'
        'WHERE p."scored"\n'
        'GROUP BY p."model_version"'
    )


def view_definitions(pipeline: PipelineConfig) -> dict[str, str]:
    """Every serving view: name → SELECT text (Trino dialect)."""
    views = compile_views(pipeline)
    out = {unified_name(name): unified_view_sql(view) for name, view in views.items()}
    if views:
        out[FRESHNESS_VIEW] = freshness_sql(views)
    perf = model_performance_sql(pipeline)
    if perf:
        out["model_performance"] = perf
    return out


def optional_views() -> dict[str, tuple[str, pa.Schema, str]]:
    """Views over tables that exist once a job has run: view → (table, its schema, SELECT text in Trino's dialect).

    The embedded engine reads a missing one as empty; Trino gets the view once the table exists.
    """
    return {CONSISTENCY_VIEW: (FEATURE_CONSISTENCY, consistency_schema(), consistency_view_sql())}


def create_view_statements(pipeline: PipelineConfig, catalog: str | None = None, schema: str | None = None) -> list[str]:
    """``CREATE OR REPLACE VIEW`` statements for Trino (optionally qualified)."""
    prefix = ".".join(quote(p) for p in (catalog, schema) if p)
    prefix = prefix + "." if prefix else ""
    return [f"CREATE OR REPLACE VIEW {prefix}{quote(name)} AS\n{body}" for name, body in view_definitions(pipeline).items()]
