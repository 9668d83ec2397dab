"""The tables the speed layer writes (``quarantine``, ``predictions``, ``speed/<view>``), their schemas and rows.

Readers in other layers (the serving engine, health checks, verify) take the
schemas and table handles from here, never from the speed layer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa

from lambdaflow.config import Settings
from lambdaflow.contracts.master import events_table, labels_table
from lambdaflow.contracts.paths import MASTER_EVENTS, MASTER_LABELS, OFFSET_GAPS, PREDICTIONS, QUARANTINE, speed_view, table_uri
from lambdaflow.schemas import INGEST_SEQ, arrow_type
from lambdaflow.scoring import feature_matrix
from lambdaflow.tables import Snapshot, Table
from lambdaflow.validation import Reject
from lambdaflow.views import CompiledView, compile_views

__all__ = [
    "OFFSET_GAPS_SCHEMA",
    "QUARANTINE_SCHEMA",
    "SpeedTables",
    "prediction_rows",
    "predictions_schema",
    "quarantine_rows",
    "speed_view_schema",
    "complete_through",
    "writer_marks",
]

QUARANTINE_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("key", pa.binary()),
        ("raw", pa.binary()),
        ("reason", pa.string()),
        ("quarantined_at", pa.timestamp("us", tz="UTC")),
        (INGEST_SEQ, pa.int64()),
    ]
)


#: ``offset_gaps``: Kafka ranges an operator acknowledged as lost; the speed layer resumes past them.
OFFSET_GAPS_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("recorded_next", pa.int64()),  # where the speed layer stood
        ("resume_at", pa.int64()),  # where it continues: the start of the log as it was acknowledged
        ("kind", pa.string()),  # retention | reset | recreated
        ("reason", pa.string()),
        ("app", pa.string()),
        ("acknowledged_by", pa.string()),
        ("acknowledged_at", pa.timestamp("us", tz="UTC")),
    ]
)


def quarantine_rows(rejects: Sequence[Reject], seq: int, when: dt.datetime) -> pa.Table:
    """Rejected records with their raw bytes, coordinates and reason."""
    return pa.table(
        {
            "topic": [r.record.topic for r in rejects],
            "partition": [r.record.partition for r in rejects],
            "offset": [r.record.offset for r in rejects],
            "key": [r.record.key for r in rejects],
            "raw": [r.record.value for r in rejects],
            "reason": [r.reason for r in rejects],
            "quarantined_at": [when] * len(rejects),
            INGEST_SEQ: [seq] * len(rejects),
        },
        schema=QUARANTINE_SCHEMA,
    )


def speed_view_schema(view: CompiledView) -> pa.Schema:
    """``speed/<view>``: the view's partial state tagged with the micro-batch it came from."""
    return view.state_schema.append(pa.field(INGEST_SEQ, pa.int64(), False))


@dataclass
class SpeedTables:
    """Handles on every table the speed layer commits to, created on first use."""

    settings: Settings

    @cached_property
    def views(self) -> dict[str, CompiledView]:
        return compile_views(self.settings.pipeline)

    @cached_property
    def master(self) -> Table:
        return events_table(self.settings)

    @cached_property
    def labels(self) -> Table | None:
        return labels_table(self.settings) if self.settings.pipeline.labels else None

    @cached_property
    def quarantine(self) -> Table:
        table = Table(table_uri(self.settings.profile, QUARANTINE))
        table.create(QUARANTINE_SCHEMA, name="quarantine")
        return table

    @cached_property
    def predictions(self) -> Table:
        table = Table(table_uri(self.settings.profile, PREDICTIONS))
        table.create(predictions_schema(self.settings), name="predictions")
        return table

    @cached_property
    def speed(self) -> dict[str, Table]:
        out = {}
        for name, view in self.views.items():
            table = Table(table_uri(self.settings.profile, speed_view(name)))
            table.create(speed_view_schema(view), name=f"speed_{name}")
            out[name] = table
        return out

    @cached_property
    def offset_gaps(self) -> Table:
        table = Table(table_uri(self.settings.profile, OFFSET_GAPS))
        table.create(OFFSET_GAPS_SCHEMA, name="offset_gaps")
        return table

    def all(self) -> dict[str, Table]:
        """Every table, by a stable name, in commit order (master first: it is the commit point)."""
        tables: dict[str, Table] = {MASTER_EVENTS: self.master, QUARANTINE: self.quarantine}
        if self.labels is not None:
            tables[MASTER_LABELS] = self.labels
        tables.update({speed_view(name): t for name, t in self.speed.items()})
        tables[PREDICTIONS] = self.predictions
        return tables


def predictions_schema(settings: Settings) -> pa.Schema:
    """``predictions``: one row per scored (or unscored) event."""
    ev = settings.pipeline.events
    return pa.schema(
        [
            pa.field(ev.id_column, arrow_type(ev.fields[ev.id_column])),
            pa.field(ev.partition_key, arrow_type(ev.fields[ev.partition_key])),
            pa.field(ev.time_column, pa.timestamp("us", tz="UTC")),
            pa.field(INGEST_SEQ, pa.int64()),
            pa.field("model_version", pa.int64()),
            pa.field("score", pa.float64()),
            pa.field("decision", pa.bool_()),
            pa.field("scored", pa.bool_()),
            pa.field("features", pa.list_(pa.float64())),
            pa.field("scored_at", pa.timestamp("us", tz="UTC")),
        ]
    )


def prediction_rows(
    settings: Settings,
    events: pa.Table,
    features: pa.Table,
    scores: np.ndarray | None,
    model_version: int | None,
    seq: int,
    when: dt.datetime,
) -> pa.Table:
    """Predictions of a batch; without a model, the rows are kept and marked unscored."""
    ev = settings.pipeline.events
    n = events.num_rows
    threshold = settings.pipeline.model.alert_threshold if settings.pipeline.model else 0.5
    matrix = feature_matrix(features)
    scored = scores is not None
    decisions = (scores >= threshold) if scores is not None else [None] * n
    return pa.table(
        {
            ev.id_column: events.column(ev.id_column),
            ev.partition_key: events.column(ev.partition_key),
            ev.time_column: events.column(ev.time_column),
            INGEST_SEQ: pa.array(np.full(n, seq, np.int64)),
            "model_version": pa.array([model_version] * n, pa.int64()),
            "score": pa.array(scores if scored else [None] * n, pa.float64()),
            "decision": pa.array(decisions, pa.bool_()),
            "scored": pa.array(np.full(n, scored)),
            "features": _rows_as_lists(matrix),
            "scored_at": pa.array([when] * n, pa.timestamp("us", tz="UTC")),
        },
        schema=predictions_schema(settings),
    )


def _rows_as_lists(matrix: np.ndarray) -> pa.Array:
    """Each row of a float matrix as a list value, built from the matrix's buffer (no Python list per row)."""
    n, k = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32), pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix, dtype=np.float64).ravel(), pa.float64()))


def writer_marks(snapshot: Snapshot, writers: Sequence[str]) -> tuple[int, ...]:
    """Each speed-layer writer's last micro-batch in a table snapshot, in ``writers`` order (0 before its first).

    Writers commit their micro-batches independently: a reader that compares tables compares these tuples,
    and the freshest micro-batch of a table is their maximum.
    """
    return tuple(snapshot.txn_version(w) or 0 for w in writers)


def complete_through(master: tuple[int, ...], speed: Sequence[tuple[int, ...]]) -> int:
    """The newest micro-batch ``s`` such that every micro-batch up to ``s``, of every writer, is in every speed table.

    Writers commit independently, so a reader that took every speed row it found could hold writer A's batch 10
    without writer B's batch 9. Each writer completes a batch before committing its next one to ``master/events``,
    so a writer's only incomplete batch is its last master commit: the cut stops just before the oldest of those.

    Args:
        master: :func:`writer_marks` of ``master/events``.
        speed: :func:`writer_marks` of each speed table, in the same writer order.
    """
    pending = [m for i, m in enumerate(master) if any(marks[i] < m for marks in speed)]
    return min(pending) - 1 if pending else max(master, default=0)
