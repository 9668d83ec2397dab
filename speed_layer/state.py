"""The speed layer's view state for features: batch view as of W, plus speed partials since.

``prior[view]`` holds merged state rows (the view's state schema) of every
event before the micro-batch being featurised. It is rebuilt from the tables
when a new batch view is published, and advanced in memory after each batch.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.config import Settings, ViewFeature
from lambdaflow.contracts.batch import NO_WATERMARK, batch_view_versions, batch_watermark, expiry_horizon
from lambdaflow.contracts.commits import WATERMARK_KEY
from lambdaflow.contracts.master import first_copies
from lambdaflow.contracts.paths import batch_view, table_uri
from lambdaflow.contracts.speed import SpeedTables
from lambdaflow.schemas import BATCH_WATERMARK, INGEST_SEQ
from lambdaflow.tables import Table
from lambdaflow.views import CompiledView

log = logging.getLogger(__name__)


class PriorState:
    """Merged per-key state of the views that features read."""

    def __init__(self, settings: Settings, tables: SpeedTables) -> None:
        self.settings = settings
        self.tables = tables
        used = {f.view for f in settings.pipeline.features if isinstance(f, ViewFeature)}
        self.views: dict[str, CompiledView] = {n: v for n, v in tables.views.items() if n in used}
        self.states: dict[str, pa.Table] = {}
        self.watermark: int = NO_WATERMARK

    def _batch_table(self, name: str) -> Table:
        return Table(table_uri(self.settings.profile, batch_view(name)))

    def load(self, below_seq: int | None = None, versions: dict[str, int | None] | None = None) -> None:
        """Rebuild from the tables: latest batch view (W) ⊕ speed partials with W < seq.

        Args:
            below_seq: the state as it was before micro-batch ``below_seq`` (for a replay): the
                newest batch-view version whose W lies below it ⊕ the speed partials in between —
                or, when expiry has already removed some of those, a recompute from ``master/events``.
            versions: the batch-view versions to read (default: the current ones, :func:`batch_view_versions`).
        """
        versions = versions if versions is not None else batch_view_versions(self.settings)
        watermarks = []
        for name, view in self.views.items():
            batch = self._batch_table(name)
            version = versions[name]
            if below_seq is not None and version is not None:
                version = _version_below(batch, below_seq)
                if expiry_horizon(batch) > (NO_WATERMARK if version is None else batch_watermark(batch.snapshot(version))):
                    self.states[name] = self._from_master(view, below_seq)
                    watermarks.append(NO_WATERMARK)
                    continue
            parts = []
            w = NO_WATERMARK
            if version is not None:
                rows = batch.snapshot(version).to_arrow()
                # W from the rows, as the serving SQL reads it: robust to compaction and checkpoint commits
                w = batch_watermark(rows)
                parts.append(rows.drop_columns([BATCH_WATERMARK]))
            watermarks.append(w)
            speed = self.tables.speed[name].snapshot()
            condition = pc.field(INGEST_SEQ) > w
            if below_seq is not None:
                condition = condition & (pc.field(INGEST_SEQ) < below_seq)
            parts.append(speed.to_arrow(filter=condition).drop_columns([INGEST_SEQ]))
            self.states[name] = view.merge_arrow(parts)
        # the views are published together by one batch run; the smallest W is the safe one to report
        self.watermark = min(watermarks) if watermarks else NO_WATERMARK
        log.info("prior state loaded", extra={"watermark": self.watermark, "rows": {n: t.num_rows for n, t in self.states.items()}})

    def _from_master(self, view: CompiledView, below_seq: int) -> pa.Table:
        """The view's state over every event ingested before ``below_seq`` (exact, and a full read of master)."""
        spec = self.settings.pipeline.events
        rows = self.tables.master.snapshot().to_arrow(filter=pc.field(INGEST_SEQ) < below_seq)
        return view.merge_arrow([view.partials_arrow(first_copies(rows, spec.id_column, spec.time_column))])

    def advance(self, partials: dict[str, pa.Table]) -> None:
        """Fold a committed micro-batch's partials into the state."""
        for name, view in self.views.items():
            if name in partials:
                self.states[name] = view.merge_arrow([self.states[name], partials[name]])


def _version_below(batch: Table, below_seq: int) -> int | None:
    """The newest version of a batch view published with W < ``below_seq`` (None: none was)."""
    for commit in batch.history():
        if WATERMARK_KEY in commit and int(commit[WATERMARK_KEY]) < below_seq:
            return int(commit["version"])
    return None
