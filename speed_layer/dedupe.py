"""Duplicate deliveries across micro-batches: event ids the speed layer has already ingested.

A producer that retries without idempotence (or a replayed file) can deliver an
event twice, in the same micro-batch or a later one. Only the first copy is
ingested: appended to ``master/events``, counted in the speed partials, featurised
and scored. A repeat is dropped and counted (``lambdaflow.duplicates`` in the
master commit, ``lambdaflow_speed_duplicate_events`` in the metrics), never
quarantined: it is not malformed.

The ids remembered are those ingested after the expiry horizon
(:func:`lambdaflow.contracts.batch.expiry_horizon`: the previous publish's W), rebuilt
from ``master/events`` on start and after each batch publish. A duplicate whose
first copy is older than that (more than about one batch cycle earlier) is not
recognised here; the speed partials count it until the next batch run, which
removes it (the batch layer keeps the first copy by
:data:`lambdaflow.contracts.master.FIRST_COPY_ORDER`). docs/operations.md states this limit.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.columns import INGEST_SEQ
from lambdaflow.contracts.batch import NO_WATERMARK, expiry_horizon
from lambdaflow.contracts.paths import batch_view, table_uri
from lambdaflow.contracts.speed import SpeedTables
from lambdaflow.tables import Table

__all__ = ["SeenEvents"]

log = logging.getLogger(__name__)


class SeenEvents:
    """The event ids ingested since the expiry horizon (exact: a set of the ids themselves)."""

    def __init__(self, tables: SpeedTables) -> None:
        self.tables = tables
        self.id_column = tables.settings.pipeline.events.id_column
        self.horizon = NO_WATERMARK
        self.ids: set[object] = set()

    def _tables(self) -> dict[str, Table]:
        settings = self.tables.settings
        return {v.name: Table(table_uri(settings.profile, batch_view(v.name))) for v in settings.pipeline.views}

    def _horizon(self) -> int:
        # the widest window any view still needs; a view published only once (a new view) does not
        # pull the horizon back to the beginning while the others have moved on
        known = [h for h in (expiry_horizon(t) for t in self._tables().values()) if h != NO_WATERMARK]
        return min(known) if known else NO_WATERMARK

    def load(self, below_seq: int | None = None) -> None:
        """Rebuild from ``master/events``: ids of micro-batches after the horizon (and before ``below_seq``)."""
        self.horizon = self._horizon()
        condition = pc.field(INGEST_SEQ) > self.horizon
        if below_seq is not None:
            condition = condition & (pc.field(INGEST_SEQ) < below_seq)
        ids = self.tables.master.snapshot().to_arrow(columns=[self.id_column], filter=condition).column(self.id_column)
        self.ids = set(ids.to_pylist())
        log.info("remembered %s event ids after micro-batch %s for duplicate checks", len(self.ids), self.horizon)

    def drop_seen(self, events: pa.Table) -> tuple[pa.Table, int]:
        """``events`` without the ids already ingested, and how many were dropped."""
        if not self.ids or events.num_rows == 0:
            return events, 0
        ids = self.ids
        fresh = pa.array([value not in ids for value in events.column(self.id_column).to_pylist()], pa.bool_())
        kept = events.filter(fresh)
        return kept, events.num_rows - kept.num_rows

    def add(self, events: pa.Table) -> None:
        """Remember the ids of events just ingested."""
        self.ids.update(events.column(self.id_column).to_pylist())
