"""The speed layer's view state for features: batch view as of W, plus every micro-batch since.

``prior[view]`` holds merged state rows (the view's state schema) of every
event ingested before the micro-batch being featurised, by any writer: the
features equal those the training set computes in ingest order (``_ingest_seq``
is the ``master/events`` version, one order over all writers). It is rebuilt
from the tables when a new batch view is published, and advanced in memory:

* by this writer's own micro-batches, as it commits them;
* by the other writers' (:meth:`PriorState.catch_up`), read from ``master/events``
  once this writer's own commit has fixed its place in that order.

A micro-batch committed to ``master/events`` whose partials are not in
``speed/<view>`` yet (its writer is between the two commits, or died there) is
taken from ``master/events`` too, so the state never depends on another writer's
progress.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.config import Settings, ViewFeature
from lambdaflow.contracts.batch import NO_WATERMARK, batch_view_versions, batch_watermark, expiry_horizon
from lambdaflow.contracts.commits import WATERMARK_KEY, writer_ids
from lambdaflow.contracts.master import first_copies
from lambdaflow.contracts.paths import batch_view, table_uri
from lambdaflow.contracts.speed import SpeedTables
from lambdaflow.schemas import BATCH_WATERMARK, INGEST_SEQ
from lambdaflow.tables import Snapshot, Table
from lambdaflow.views import CompiledView
from speed_layer.dedupe import SeenEvents

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
        #: every micro-batch with ``_ingest_seq`` ≤ this is in the state (besides this writer's own, later ones)
        self.through: int = 0
        #: this writer's micro-batches after :attr:`through`, folded in as they were committed
        self.own: set[int] = set()
        self.writers = writer_ids(settings)

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
        master = self.tables.master.snapshot()
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
            # up to the master version read: a batch committed after it is caught up from master (catch_up)
            condition = (pc.field(INGEST_SEQ) > w) & (pc.field(INGEST_SEQ) <= master.version)
            if below_seq is not None:
                condition = condition & (pc.field(INGEST_SEQ) < below_seq)
            parts.append(speed.to_arrow(filter=condition).drop_columns([INGEST_SEQ]))
            pending = self._pending(master, speed, w, below_seq)
            if pending.num_rows:
                parts.append(view.partials_arrow(pending))
            self.states[name] = view.merge_arrow(parts)
        # the views are published together by one batch run; the smallest W is the safe one to report
        self.watermark = min(watermarks) if watermarks else NO_WATERMARK
        self.through = master.version if below_seq is None else below_seq - 1
        self.own = set()
        log.info("prior state loaded", extra={"watermark": self.watermark, "rows": {n: t.num_rows for n, t in self.states.items()}})

    def _pending(self, master: Snapshot, speed: Snapshot, w: int, below_seq: int | None) -> pa.Table:
        """Rows of the micro-batches in ``master`` after W (and before ``below_seq``) whose partials ``speed`` lacks.

        Each writer completes a micro-batch before committing its next one, so only a writer's last
        master commit can be missing from ``speed/<view>``.
        """
        seqs = []
        for writer in self.writers:
            last = master.txn_version(writer)
            if last is not None and last > w and (below_seq is None or last < below_seq) and (speed.txn_version(writer) or 0) < last:
                seqs.append(last)
        if not seqs:
            return master.schema.empty_table()
        spec = self.settings.pipeline.events
        rows = first_copies(master.to_arrow(filter=pc.field(INGEST_SEQ).isin(seqs)), spec.id_column, spec.time_column)
        # a copy of an event ingested earlier (after W) was left out of its batch's partials: leave it out here too
        earlier = master.to_arrow(
            columns=[spec.id_column, INGEST_SEQ], filter=(pc.field(INGEST_SEQ) > w) & (pc.field(INGEST_SEQ) < max(seqs))
        )
        if earlier.num_rows:
            first = earlier.group_by(spec.id_column).aggregate([(INGEST_SEQ, "min")])
            firsts = dict(zip(first.column(spec.id_column).to_pylist(), first.column(f"{INGEST_SEQ}_min").to_pylist()))
            keep = [
                firsts.get(i, seq) >= seq for i, seq in zip(rows.column(spec.id_column).to_pylist(), rows.column(INGEST_SEQ).to_pylist())
            ]
            rows = rows.filter(pa.array(keep, pa.bool_()))
        return rows

    def catch_up(self, below_seq: int, seen: SeenEvents) -> None:
        """Fold in the other writers' micro-batches committed since :attr:`through` and before ``below_seq``.

        Args:
            below_seq: the micro-batch about to be featurised (this writer's, just committed).
            seen: the ids ingested so far; a copy another writer ingested after the first counts nowhere
                (the batch layer keeps the first), and the ids folded in are added.
        """
        through, self.through = self.through, below_seq - 1
        own, self.own = self.own, set()
        if below_seq - 1 <= through or set(range(through + 1, below_seq)) <= own:
            return
        condition = (pc.field(INGEST_SEQ) > through) & (pc.field(INGEST_SEQ) < below_seq)
        if own:
            condition = condition & ~pc.field(INGEST_SEQ).isin(list(own))
        rows = self.tables.master.snapshot().to_arrow(filter=condition)
        if rows.num_rows:
            spec = self.settings.pipeline.events
            rows = seen.drop_seen(first_copies(rows, spec.id_column, spec.time_column))[0]
            seen.add(rows)
            self.advance({name: view.partials_arrow(rows) for name, view in self.views.items()})

    def _from_master(self, view: CompiledView, below_seq: int) -> pa.Table:
        """The view's state over every event ingested before ``below_seq`` (exact, and a full read of master)."""
        spec = self.settings.pipeline.events
        rows = self.tables.master.snapshot().to_arrow(filter=pc.field(INGEST_SEQ) < below_seq)
        return view.merge_arrow([view.partials_arrow(first_copies(rows, spec.id_column, spec.time_column))])

    def advance(self, partials: dict[str, pa.Table], seq: int | None = None) -> None:
        """Fold a committed micro-batch's partials into the state (``seq``: this writer's, after :attr:`through`)."""
        if seq is not None:
            self.own.add(seq)
        for name, view in self.views.items():
            if name in partials:
                self.states[name] = view.merge_arrow([self.states[name], partials[name]])


def _version_below(batch: Table, below_seq: int) -> int | None:
    """The newest version of a batch view published with W < ``below_seq`` (None: none was)."""
    for commit in batch.history():
        if WATERMARK_KEY in commit and int(commit[WATERMARK_KEY]) < below_seq:
            return int(commit["version"])
    return None
