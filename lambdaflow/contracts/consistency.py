"""Online/offline consistency: the served-feature log and the consistency results, written once for every layer.

The serving layer appends a sample of the vectors it serves to :data:`~lambdaflow.contracts.paths.FEATURE_LOG`
(one row per vector: the event as given, the point in time it was served at, the vector). The batch layer
recomputes them with the training-set code and appends one row per (source, feature) to
:data:`~lambdaflow.contracts.paths.FEATURE_CONSISTENCY`; the SQL view :data:`CONSISTENCY_VIEW` shows the latest run.

The point in time of a served vector is ``as_of_seq``: the newest micro-batch whose rows the online snapshot
held. Offline, the vector is the feature function's for an event placed right after micro-batch ``as_of_seq``
in ingest order, seeing every master event up to it and none after.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pyarrow as pa

from lambdaflow.config import PipelineConfig
from lambdaflow.contracts.paths import FEATURE_CONSISTENCY, sql_name
from lambdaflow.schemas import event_schema

__all__ = [
    "CONSISTENCY_VIEW",
    "DEFAULT_MAX_ROWS",
    "DEFAULT_SAMPLE",
    "LOG_ID",
    "Source",
    "compare",
    "consistency_schema",
    "consistency_view_sql",
    "feature_fingerprint",
    "feature_log_rows",
    "feature_log_schema",
    "results_rows",
]

#: Where a served vector came from: the API's two online paths, or the speed layer's predictions.
Source = Literal["features", "score", "predictions"]

#: Share of the speed layer's predictions the consistency check takes per run, by default.
DEFAULT_SAMPLE = 0.05
#: Most vectors the consistency check takes per source and run, by default.
DEFAULT_MAX_ROWS = 20_000
#: The log row's own id (a served event may carry no id, or one that master will also hold).
LOG_ID = "log_id"
#: The SQL view of the latest run's results.
CONSISTENCY_VIEW = "feature_consistency"
_UTC = pa.timestamp("us", tz="UTC")


def feature_log_schema(pipeline: PipelineConfig) -> pa.Schema:
    """Log rows: id, when and from where, the point in time, the event as given (fields may be missing), the vector."""
    given = [f.with_nullable(True) for f in event_schema(pipeline.events)]
    return pa.schema(
        [
            pa.field(LOG_ID, pa.string(), False),
            pa.field("logged_at", _UTC, False),
            pa.field("source", pa.string(), False),
            pa.field("as_of_seq", pa.int64(), False),
            pa.field("feature_list", pa.string(), False),
            *given,
            pa.field("features", pa.list_(pa.float64()), False),
        ]
    )


def feature_fingerprint(names: Sequence[str]) -> str:
    """A short digest of the feature names in order: vectors are compared only under the list they were served with."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def feature_log_rows(
    pipeline: PipelineConfig, source: Source, events: pa.Table, features: pa.Table, as_of_seq: int, when: dt.datetime
) -> pa.Table:
    """Log rows for ``events`` served with ``features`` (one row each, same order) at ``as_of_seq``."""
    schema = feature_log_schema(pipeline)
    n = events.num_rows
    columns_of = [np.asarray(features.column(c).to_numpy(zero_copy_only=False), np.float64) for c in features.column_names]
    matrix: np.ndarray = np.column_stack(columns_of) if n else np.zeros((0, len(columns_of)))
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        LOG_ID: pa.array([uuid.uuid4().hex for _ in range(n)], pa.string()),
        "logged_at": pa.array([when] * n, _UTC),
        "source": pa.array([source] * n, pa.string()),
        "as_of_seq": pa.array([as_of_seq] * n, pa.int64()),
        "feature_list": pa.array([feature_fingerprint(features.column_names)] * n, pa.string()),
    }
    for field in schema:
        if field.name not in columns and field.name != "features":
            columns[field.name] = (
                events.column(field.name).cast(field.type) if field.name in events.column_names else pa.nulls(n, field.type)
            )
    columns["features"] = pa.array([list(row) for row in matrix], pa.list_(pa.float64()))
    return pa.table(columns, schema=schema)


def consistency_schema() -> pa.Schema:
    """One row per (run, source, feature)."""
    return pa.schema(
        [
            pa.field("checked_at", _UTC, False),
            pa.field("master_version", pa.int64(), False),
            pa.field("source", pa.string(), False),
            pa.field("feature", pa.string(), False),
            pa.field("compared", pa.int64(), False),
            pa.field("mismatches", pa.int64(), False),
            pa.field("missing", pa.int64(), False),
            pa.field("mismatch_rate", pa.float64(), True),
            pa.field("missing_rate", pa.float64(), True),
            pa.field("mean_relative_error", pa.float64(), True),
        ]
    )


def consistency_view_sql() -> str:
    """The latest run's rows (Trino dialect, like every serving view)."""
    table = f'"{sql_name(FEATURE_CONSISTENCY)}"'
    return f'SELECT * FROM {table} WHERE "checked_at" = (SELECT MAX("checked_at") FROM {table})'


def compare(online: np.ndarray, offline: np.ndarray) -> dict[str, float | int | None]:
    """Per feature, Chronon's measures: equal (to 1e-9 relative, NaN equal to NaN), missing online, mean relative error.

    Args:
        online: the served values (NaN: missing).
        offline: the recomputed values, same order.
    """
    n = len(online)
    equal = np.isclose(online, offline, rtol=1e-9, atol=1e-12, equal_nan=True)
    missing = np.isnan(online) & ~np.isnan(offline)
    both = ~np.isnan(online) & ~np.isnan(offline)
    relative = np.abs(online[both] - offline[both]) / np.maximum(np.abs(offline[both]), 1e-12)
    mismatches = int((~equal).sum())
    return {
        "compared": n,
        "mismatches": mismatches,
        "missing": int(missing.sum()),
        "mismatch_rate": mismatches / n if n else None,
        "missing_rate": float(missing.sum()) / n if n else None,
        "mean_relative_error": float(relative.mean()) if relative.size else None,
    }


def results_rows(
    checked_at: dt.datetime, master_version: int, results: Sequence[tuple[str, str, dict[str, float | int | None]]]
) -> pa.Table:
    """Rows of :data:`FEATURE_CONSISTENCY` from (source, feature, :func:`compare` result) triples."""
    rows = [{"checked_at": checked_at, "master_version": master_version, "source": s, "feature": f, **r} for s, f, r in results]
    return pa.Table.from_pylist(rows, schema=consistency_schema())
