"""One micro-batch, exactly once: validate → append → partials → score, each commit tagged (app id, s).

Commit order: ``master/events`` first — it is the commit point and records the
batch's Kafka offset ranges — then ``quarantine``, ``master/labels``,
``speed/<view>`` and ``predictions``. Every commit carries the Delta ``txn``
action (app id, ``s``), so replaying a batch skips the tables that already have
it. After a crash, :meth:`SpeedPipeline.recover` replays the last batch from
Kafka by its recorded offset ranges: the tables that are behind catch up, the
others skip.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.config import Settings
from lambdaflow.contracts.batch import batch_view_versions
from lambdaflow.contracts.commits import (
    APP_KEY,
    DUPLICATES_KEY,
    INGESTED_AT_KEY,
    OFFSETS_END_KEY,
    OFFSETS_LAST_KEY,
    OFFSETS_START_KEY,
    RECORDS_KEY,
    SEQ_KEY,
    VALID_KEY,
    Offsets,
    app_id,
)
from lambdaflow.contracts.master import first_copies, to_label_rows, to_master_rows
from lambdaflow.contracts.paths import MASTER_EVENTS, MASTER_LABELS, PREDICTIONS, QUARANTINE, speed_view
from lambdaflow.contracts.speed import SpeedTables, prediction_rows, quarantine_rows
from lambdaflow.errors import TableError
from lambdaflow.faults import crash_point
from lambdaflow.features import FeatureFunction
from lambdaflow.schemas import INGEST_SEQ
from lambdaflow.scoring import ChampionCache
from lambdaflow.tables import Txn
from lambdaflow.validation import RawRecord, Reject, Validator
from speed_layer.continuity import check_replay
from speed_layer.dedupe import SeenEvents
from speed_layer.state import PriorState

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """Counts of one micro-batch."""

    seq: int
    records: int
    appended: int
    quarantined: int
    labels: int
    scored: int
    model_version: int | None
    seconds: float
    max_event_time: dt.datetime | None = None
    skipped_tables: list[str] = field(default_factory=list)
    #: events already ingested by an earlier micro-batch (kept in master/events, left out of everything else)
    duplicates: int = 0


class SpeedPipeline:
    """Everything a micro-batch does, without the Kafka consumer (see :mod:`speed_layer.runner`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app_id = app_id(settings)
        self.tables = SpeedTables(settings)
        pipeline = settings.pipeline
        self.event_topic = pipeline.source.topic
        self.label_topic = pipeline.labels.topic if pipeline.labels else None
        self.events = Validator.for_events(pipeline.events, pipeline.source.max_payload_bytes)
        self.labels = Validator(pipeline.labels.fields, pipeline.source.max_payload_bytes) if pipeline.labels else None
        self.features = FeatureFunction(pipeline)
        self.prior = PriorState(settings, self.tables)
        self.seen = SeenEvents(self.tables)
        self._published: dict[str, int | None] = {}
        self.scorer = ChampionCache(settings)

    # ------------------------------------------------------------------ bookkeeping

    def last_seq(self) -> int:
        """The last micro-batch committed to the master table (0 before the first)."""
        return self.tables.master.txn_version(self.app_id) or 0

    def batch_commit(self, seq: int) -> dict[str, Any]:
        """The ``master/events`` commit info of micro-batch ``seq``."""
        for limit in (50, None):
            for commit in self.tables.master.history(limit):
                if commit.get(SEQ_KEY) == seq and commit.get(APP_KEY) == self.app_id:
                    return commit
        raise TableError(
            f"master/events has no commit info for micro-batch {seq} of {self.app_id} (removed by log cleanup?): "
            "the positions to resume from are unknown; restore the table's _delta_log or start a new consumer group"
        )

    def committed_position(self) -> tuple[Offsets, Offsets]:
        """Where the last committed batch left each topic/partition, from one read of its commit:
        the next offset, and the fingerprint of the last ingested record (both empty before the first batch)."""
        seq = self.last_seq()
        commit = {} if seq == 0 else self.batch_commit(seq)
        return commit.get(OFFSETS_END_KEY, {}), commit.get(OFFSETS_LAST_KEY, {})

    def committed_offsets(self) -> Offsets:
        """Next offset per topic/partition as of the last committed batch (empty before the first)."""
        return self.committed_position()[0]

    def load_state(self, below_seq: int | None = None) -> None:
        """Rebuild the in-memory state from the tables: prior view state and the ids seen (before ``below_seq``)."""
        self._published = batch_view_versions(self.settings)
        self.prior.load(below_seq=below_seq, versions=self._published)
        self.seen.load(below_seq=below_seq)

    def state_stale(self) -> bool:
        """True when a batch view was published (or maintained) since :meth:`load_state`: view state and horizon may have moved.

        One read of the batch views' versions, for both the prior state and the ids seen: this runs every poll.
        """
        return batch_view_versions(self.settings) != self._published

    # ------------------------------------------------------------------ the batch

    def process(
        self,
        records: Sequence[RawRecord],
        seq: int,
        start: Offsets,
        end: Offsets,
        now: dt.datetime | None = None,
        last: Offsets | None = None,
        committed: pa.Table | None = None,
    ) -> BatchResult:
        """Run micro-batch ``seq`` over ``records`` (the consumed range ``start``..``end``).

        Args:
            now: the batch's ingest time (a replay passes the time recorded by the first attempt).
            last: fingerprint of the last record per topic/partition after this batch (cumulative).
            committed: for a replay, the batch's rows already in ``master/events``: they, not a new
                validation and duplicate check, are what the other tables are completed from.
        """
        t0 = time.monotonic()
        now = now or dt.datetime.now(dt.timezone.utc)
        txn = Txn(self.app_id, seq)
        event_records = [r for r in records if r.topic == self.event_topic]
        label_records = [r for r in records if self.label_topic is not None and r.topic == self.label_topic]
        other = [Reject(r, f"unexpected topic {r.topic!r}") for r in records if r.topic not in (self.event_topic, self.label_topic)]

        valid, accepted, rejects = self.events.validate(event_records, now=now)
        spec = self.settings.pipeline.events
        master_rows = to_master_rows(valid, spec, seq, *_coordinates(accepted), now)
        # a repeated delivery (same event id, in this batch or an earlier one) is dropped: counted, not quarantined
        if committed is None:
            unique, _ = self.seen.drop_seen(first_copies(master_rows, spec.id_column, spec.time_column))
        else:
            unique = committed
        duplicates = master_rows.num_rows - unique.num_rows
        skipped: list[str] = []
        metadata = {
            SEQ_KEY: seq,
            APP_KEY: self.app_id,
            OFFSETS_START_KEY: start,
            OFFSETS_END_KEY: end,
            RECORDS_KEY: len(records),
            INGESTED_AT_KEY: now.isoformat(),
            OFFSETS_LAST_KEY: last or {},
            VALID_KEY: valid.num_rows,
            DUPLICATES_KEY: duplicates,
        }
        self._commit(
            MASTER_EVENTS,
            seq,
            lambda: self.tables.master.append(unique, txn=txn, metadata=metadata, operation="speed-append"),
            skipped,
        )

        label_rows = None
        label_spec = self.settings.pipeline.labels
        if self.labels is not None and self.tables.labels is not None and label_spec is not None:
            good_labels, label_accepted, bad_labels = self.labels.validate(label_records)
            rejects += bad_labels
            label_rows = to_label_rows(good_labels, label_spec, seq, *_coordinates(label_accepted), now)
        rejects += other
        self._commit(
            QUARANTINE,
            seq,
            lambda: self.tables.quarantine.append(quarantine_rows(rejects, seq, now), txn=txn, operation="speed-quarantine"),
            skipped,
        )
        if label_rows is not None:
            self._commit(MASTER_LABELS, seq, lambda: self.tables.labels.append(label_rows, txn=txn, operation="speed-labels"), skipped)  # type: ignore[union-attr]

        self.seen.add(unique)
        features = self.features.compute(unique, self.prior.states)
        partials = {}
        for name, view in self.tables.views.items():
            part = view.partials_arrow(unique)
            partials[name] = part
            tagged = part.append_column(INGEST_SEQ, pa.array(np.full(part.num_rows, seq, np.int64)))
            self._commit(
                speed_view(name),
                seq,
                functools.partial(self.tables.speed[name].append, tagged, txn=txn, operation="speed-partials"),
                skipped,
            )
        self.prior.advance(partials)

        scores = self.scorer.score(features)
        predictions = prediction_rows(self.settings, unique, features, scores, self.scorer.version, seq, now)
        self._commit(PREDICTIONS, seq, lambda: self.tables.predictions.append(predictions, txn=txn, operation="speed-predictions"), skipped)
        max_time = pc.max(valid.column(spec.time_column)).as_py() if valid.num_rows else None
        return BatchResult(
            seq,
            len(records),
            unique.num_rows,
            len(rejects),
            0 if label_rows is None else label_rows.num_rows,
            0 if scores is None else len(scores),
            self.scorer.version,
            round(time.monotonic() - t0, 4),
            max_time,
            skipped,
            duplicates,
        )

    def _commit(self, name: str, seq: int, commit: Callable[[], Any], skipped: list[str]) -> None:
        if commit().skipped:
            skipped.append(name)
        crash_point(f"after:{name}:{seq}")  # fault injection for the crash tests

    # ------------------------------------------------------------------ recovery

    def recover(self, fetch: Callable[[Offsets, Offsets], list[RawRecord]]) -> BatchResult | None:
        """Bring every table up to the last committed batch, replaying it from Kafka if any table is behind.

        Args:
            fetch: returns the records of a batch given its start and end offsets.

        Returns:
            The replayed batch, or None when nothing was behind.
        """
        seq = self.last_seq()
        if seq == 0:
            self.load_state()
            return None
        behind = [name for name, table in self.tables.all().items() if (table.txn_version(self.app_id) or 0) < seq]
        if not behind:
            self.load_state()
            return None
        self.load_state(below_seq=seq)  # the state the batch was first processed with
        commit = self.batch_commit(seq)
        start, end = commit.get(OFFSETS_START_KEY, {}), commit.get(OFFSETS_END_KEY, {})
        records = fetch(start, end)
        check_replay(records, start, end, commit.get(RECORDS_KEY), commit.get(OFFSETS_LAST_KEY, {}))
        log.warning("replaying micro-batch %s for %s (%s records)", seq, behind, len(records))
        ingested = commit.get(INGESTED_AT_KEY)
        when = dt.datetime.fromisoformat(ingested) if ingested else None
        rows = self.tables.master.snapshot().to_arrow(filter=pc.field(INGEST_SEQ) == seq)
        result = self.process(records, seq, start, end, now=when, last=commit.get(OFFSETS_LAST_KEY), committed=rows)
        self.load_state()
        return result


def _coordinates(records: Sequence[RawRecord]) -> tuple[pa.Array, pa.Array]:
    """The Kafka partition and offset of each record, as the ingest columns store them."""
    return pa.array([r.partition for r in records], pa.int32()), pa.array([r.offset for r in records], pa.int64())
