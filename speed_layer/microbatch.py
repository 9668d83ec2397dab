"""One micro-batch, exactly once: validate → append → partials → score, each commit tagged (app id, s).

Commit order: ``master/events`` first — it is the commit point and records the
batch's Kafka offset ranges — then ``quarantine``, ``master/labels``,
``speed/<view>`` and ``predictions`` side by side, as each is ready
(:mod:`speed_layer.commits`); the batch ends when all have settled. Every commit
carries the Delta ``txn`` action (app id, ``s``), so replaying a batch skips the
tables that already have it. After a crash, :meth:`SpeedPipeline.recover` replays the last batch from
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
    EPOCH_KEY,
    INGESTED_AT_KEY,
    OFFSETS_END_KEY,
    OFFSETS_LAST_KEY,
    OFFSETS_START_KEY,
    RECORDS_KEY,
    SEQ_KEY,
    VALID_KEY,
    Offsets,
    app_id,
    writer_ids,
)
from lambdaflow.contracts.master import first_copies, to_label_rows, to_master_rows
from lambdaflow.contracts.paths import MASTER_EVENTS, MASTER_LABELS, PREDICTIONS, QUARANTINE, speed_view
from lambdaflow.contracts.speed import SpeedTables, prediction_rows, quarantine_rows
from lambdaflow.errors import TableError
from lambdaflow.faults import crash_point
from lambdaflow.features import FeatureFunction
from lambdaflow.schemas import INGEST_SEQ
from lambdaflow.scoring import ChampionCache
from lambdaflow.tables import Head, Txn
from lambdaflow.validation import RawRecord, Reject, Validator
from speed_layer.commits import SideCommits
from speed_layer.continuity import check_replay
from speed_layer.dedupe import SeenEvents
from speed_layer.fencing import check_claims, overlay, recorded_positions
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
    #: seconds per stage: validate (decode, check, dedupe), master (the commit point), side (labels), catch_up
    #: (other writers' batches), features, views (partials), score, predictions (their rows), and commits: the
    #: wait for the side, view and prediction commits, which run meanwhile on commit threads
    stages: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Replay:
    """A micro-batch already in ``master/events``, being completed in the other tables."""

    seq: int
    rows: pa.Table
    app: str


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
        #: the last micro-batch this writer committed, and where it holds the partitions to stand
        #: (set by :meth:`start`); the master commit checks both (:mod:`speed_layer.fencing`)
        self.seq = 0
        self.believed: Offsets = {}
        self.fingerprints: Offsets = {}
        self._writing = self.app_id
        #: when this process took up its identity: of two processes with one identity the later wins
        self.epoch = time.time_ns()

    # ------------------------------------------------------------------ bookkeeping

    def last_seq(self) -> int:
        """The last micro-batch committed to the master table (0 before the first)."""
        return self.tables.master.txn_version(self.app_id) or 0

    def batch_commit(self, seq: int) -> dict[str, Any]:
        """The ``master/events`` commit info of micro-batch ``seq``."""
        for limit in (50, None):
            for commit in self.tables.master.history(limit):
                if commit.get(SEQ_KEY) == seq:
                    return commit
        raise TableError(
            f"master/events has no commit info for micro-batch {seq} (removed by log cleanup?): "
            "the positions to resume from are unknown; restore the table's _delta_log or start a new consumer group"
        )

    def committed_position(self) -> tuple[Offsets, Offsets]:
        """Where the newest speed commit of any writer left each topic/partition: the next offset, and the
        fingerprint of the last ingested record (both empty before the first batch; see :mod:`speed_layer.fencing`)."""
        return recorded_positions(self.tables.master.history)

    def committed_offsets(self) -> Offsets:
        """Next offset per topic/partition as of the newest speed commit (empty before the first)."""
        return self.committed_position()[0]

    def start(self) -> Offsets:
        """Take up the writer's identity where the tables leave it; returns the positions to resume from."""
        self.seq = self.last_seq()
        self.believed, self.fingerprints = self.committed_position()
        return self.believed

    def load_state(self, below_seq: int | None = None) -> None:
        """Rebuild the in-memory state from the tables: prior view state and the ids seen (before ``below_seq``)."""
        self._published = batch_view_versions(self.settings)
        self.prior.load(below_seq=below_seq, versions=self._published)
        # the same cut as the view state: an id read from a batch the state does not hold yet would make
        # catch_up drop that whole batch as "already seen" (another writer committing between the two reads)
        self.seen.load(below_seq=self.prior.through + 1)

    def state_stale(self) -> bool:
        """True when a batch view was published (or maintained) since :meth:`load_state`: view state and horizon may have moved.

        One read of the batch views' versions, for both the prior state and the ids seen: this runs every poll.
        """
        return batch_view_versions(self.settings) != self._published

    # ------------------------------------------------------------------ the batch

    def process(
        self,
        records: Sequence[RawRecord],
        start: Offsets,
        end: Offsets,
        now: dt.datetime | None = None,
        last: Offsets | None = None,
        replay: Replay | None = None,
    ) -> BatchResult:
        """Run a micro-batch over ``records`` (the consumed range ``start``..``end``).

        A new batch's sequence number is the ``master/events`` version its commit becomes
        (:mod:`speed_layer.fencing`); that commit refuses a stale writer.

        Args:
            start: first offset of the batch per topic/partition.
            end: next offset per topic/partition after the batch (only the batch's partitions are read).
            now: the batch's ingest time (a replay passes the time recorded by the first attempt).
            last: fingerprint of the last record per topic/partition after this batch.
            replay: for a batch already committed to ``master/events``, its sequence number and rows:
                they, not a new validation and duplicate check, are what the other tables are completed from.

        Raises:
            FencedError: another writer took this one's identity or one of its partitions.
        """
        t0 = time.monotonic()
        clock = _Stages(t0)
        now = now or dt.datetime.now(dt.timezone.utc)
        event_records = [r for r in records if r.topic == self.event_topic]
        label_records = [r for r in records if self.label_topic is not None and r.topic == self.label_topic]
        other = [Reject(r, f"unexpected topic {r.topic!r}") for r in records if r.topic not in (self.event_topic, self.label_topic)]

        valid, accepted, rejects = self.events.validate(event_records, now=now)
        spec = self.settings.pipeline.events
        master_rows = to_master_rows(valid, spec, 0, *_coordinates(accepted), now)
        # a repeated delivery (same event id, in this batch or an earlier one) is dropped: counted, not quarantined
        unique = self.seen.drop_seen(first_copies(master_rows, spec.id_column, spec.time_column))[0] if replay is None else replay.rows
        duplicates = master_rows.num_rows - unique.num_rows
        skipped: list[str] = []
        metadata = {
            APP_KEY: self.app_id,
            OFFSETS_START_KEY: start,
            RECORDS_KEY: len(records),
            INGESTED_AT_KEY: now.isoformat(),
            VALID_KEY: valid.num_rows,
            DUPLICATES_KEY: duplicates,
        }
        clock.mark("validate")
        if replay is None:
            seq, unique = self._commit_master(unique, start, end, last or {}, metadata)
        else:
            seq = replay.seq
            skipped.append(MASTER_EVENTS)
        self._writing = self.app_id if replay is None else replay.app
        txn = Txn(self._writing, seq)
        clock.mark("master")
        commits = SideCommits()
        try:
            label_rows, quarantined = self._commit_side(commits, label_records, rejects + other, seq, txn, now)
            clock.mark("side")
            if replay is None:
                self.prior.catch_up(seq, self.seen)  # other writers' batches before this one, now that it has its place
            # a copy another writer ingested first (the batch layer keeps that one) counts nowhere else
            unique, late_copies = self.seen.drop_seen(unique)
            duplicates += late_copies
            self.seen.add(unique)
            clock.mark("catch_up")
            features = self.features.compute(unique, self.prior.states)
            clock.mark("features")
            partials = {}
            for name, view in self.tables.views.items():
                part = view.partials_arrow(unique)
                partials[name] = part
                tagged = part.append_column(INGEST_SEQ, pa.array(np.full(part.num_rows, seq, np.int64)))
                table = self.tables.speed[name]
                commits.submit(
                    speed_view(name),
                    table,
                    self._writing,
                    seq,
                    functools.partial(table.append, tagged, txn=txn, operation="speed-partials"),
                )
            self.prior.advance(partials, seq if replay is None else None)
            clock.mark("views")
            scores = self.scorer.score(features)
            clock.mark("score")
            predictions = prediction_rows(self.settings, unique, features, scores, self.scorer.version, seq, now)
            table = self.tables.predictions
            commits.submit(
                PREDICTIONS, table, self._writing, seq, functools.partial(table.append, predictions, txn=txn, operation="speed-predictions")
            )
            clock.mark("predictions")
            skipped += commits.settle()
        except BaseException:
            commits.abandon()
            raise
        clock.mark("commits")
        max_time = pc.max(valid.column(spec.time_column)).as_py() if valid.num_rows else None
        return BatchResult(
            seq,
            len(records),
            unique.num_rows,
            quarantined,
            0 if label_rows is None else label_rows.num_rows,
            0 if scores is None else len(scores),
            self.scorer.version,
            round(time.monotonic() - t0, 4),
            max_time,
            skipped,
            duplicates,
            clock.mark("predictions"),
        )

    def _commit_master(self, rows: pa.Table, start: Offsets, end: Offsets, last: Offsets, metadata: dict[str, Any]) -> tuple[int, pa.Table]:
        """Append the batch to ``master/events`` as its next version, if this writer still holds its claims.

        Returns:
            The batch's sequence number (the version committed) and its rows as committed.
        """
        batch_end = {t: {p: end[t][p] for p in parts} for t, parts in start.items()}
        batch_last = {t: {p: v for p, v in last.get(t, {}).items() if p in parts} for t, parts in start.items()}
        committed: dict[str, Any] = {}

        def build(head: Head) -> tuple[pa.Table, Txn, dict[str, Any]]:
            recorded, fingerprints = check_claims(head, self.app_id, self.seq, self.believed, start, self.epoch)
            seq = head.version + 1
            committed["end"], committed["last"] = overlay(recorded, batch_end), overlay(fingerprints, batch_last)
            tagged = rows.set_column(rows.schema.get_field_index(INGEST_SEQ), INGEST_SEQ, pa.array(np.full(rows.num_rows, seq, np.int64)))
            committed["rows"] = tagged
            info = {**metadata, SEQ_KEY: seq, EPOCH_KEY: self.epoch, OFFSETS_END_KEY: committed["end"], OFFSETS_LAST_KEY: committed["last"]}
            return tagged, Txn(self.app_id, seq), info

        result = self.tables.master.append_next(build, operation="speed-append")
        self.seq = result.version
        self.believed, self.fingerprints = committed["end"], committed["last"]
        crash_point(f"after:{MASTER_EVENTS}:{self.seq}")
        return self.seq, committed["rows"]

    def _commit_side(
        self, commits: SideCommits, label_records: list[RawRecord], rejects: list[Reject], seq: int, txn: Txn, now: dt.datetime
    ) -> tuple[pa.Table | None, int]:
        """Submit the label and quarantine commits of batch ``seq``; returns the label rows (None without labels)
        and the number of records quarantined."""
        label_rows = None
        label_spec = self.settings.pipeline.labels
        if self.labels is not None and self.tables.labels is not None and label_spec is not None:
            good_labels, label_accepted, bad_labels = self.labels.validate(label_records)
            rejects = rejects + bad_labels
            label_rows = to_label_rows(good_labels, label_spec, seq, *_coordinates(label_accepted), now)
            labels = self.tables.labels
            commits.submit(
                MASTER_LABELS, labels, self._writing, seq, functools.partial(labels.append, label_rows, txn=txn, operation="speed-labels")
            )
        quarantine = self.tables.quarantine
        rows = quarantine_rows(rejects, seq, now)
        commits.submit(
            QUARANTINE, quarantine, self._writing, seq, functools.partial(quarantine.append, rows, txn=txn, operation="speed-quarantine")
        )
        return label_rows, len(rejects)

    # ------------------------------------------------------------------ recovery

    def recover(self, fetch: Callable[[Offsets, Offsets], list[RawRecord]], reload: bool = True) -> list[BatchResult]:
        """Complete every writer's last micro-batch in the tables behind, replaying it from Kafka.

        A writer completes a micro-batch before committing the next, so only each writer's last master
        commit can be incomplete; a writer that died there (and was scaled away) is completed by any other.

        Args:
            fetch: returns the records of a batch given its start and end offsets.
            reload: rebuild the feature state even when nothing was replayed (a start; a running writer's
                state already holds every batch through :meth:`PriorState.catch_up`).

        Returns:
            The replayed batches, oldest first.
        """
        master = self.tables.master.snapshot()
        last = {w: master.txn_version(w) or 0 for w in writer_ids(self.settings) if w != self.app_id}
        last[self.app_id] = master.txn_version(self.app_id) or 0
        replayed = []
        for writer, seq in sorted(last.items(), key=lambda item: item[1]):
            behind = [name for name, table in self.tables.all().items() if seq and (table.txn_version(writer) or 0) < seq]
            if behind:
                replayed.append(self._replay(writer, seq, behind, fetch))
        if replayed or reload:
            self.load_state()
        return replayed

    def _replay(self, writer: str, seq: int, behind: list[str], fetch: Callable[[Offsets, Offsets], list[RawRecord]]) -> BatchResult:
        self.load_state(below_seq=seq)  # the state the batch was first processed with
        commit = self.batch_commit(seq)
        start, end = commit.get(OFFSETS_START_KEY, {}), commit.get(OFFSETS_END_KEY, {})
        records = fetch(start, end)
        check_replay(records, start, end, commit.get(RECORDS_KEY), commit.get(OFFSETS_LAST_KEY, {}))
        log.warning("replaying micro-batch %s of %s for %s (%s records)", seq, writer, behind, len(records))
        ingested = commit.get(INGESTED_AT_KEY)
        when = dt.datetime.fromisoformat(ingested) if ingested else None
        rows = self.tables.master.snapshot().to_arrow(filter=pc.field(INGEST_SEQ) == seq)
        return self.process(records, start, end, now=when, last=commit.get(OFFSETS_LAST_KEY), replay=Replay(seq, rows, writer))


class _Stages:
    """Seconds between successive marks, by stage name."""

    def __init__(self, t0: float) -> None:
        self.last = t0
        self.seconds: dict[str, float] = {}

    def mark(self, stage: str) -> dict[str, float]:
        now = time.monotonic()
        self.seconds[stage] = round(self.seconds.get(stage, 0.0) + now - self.last, 5)
        self.last = now
        return self.seconds


def _coordinates(records: Sequence[RawRecord]) -> tuple[pa.Array, pa.Array]:
    """The Kafka partition and offset of each record, as the ingest columns store them."""
    return pa.array([r.partition for r in records], pa.int32()), pa.array([r.offset for r in records], pa.int64())
