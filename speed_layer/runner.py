"""The long-running speed layer: micro-batches from a fetch process that is a member of the consumer group.

Start-up: reconcile the tables (replay the last batch where a table is behind),
then read every assigned partition from the offsets recorded in the last
``master/events`` commit — Kafka's group offsets are only for lag monitoring
and are committed after the Delta commits. The fetch process
(:mod:`speed_layer.fetch_worker`) polls while a batch is processed and closes
batches adaptively. SIGTERM/SIGINT finish the current batch, then stop.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from lambdaflow import services
from lambdaflow.config import Settings
from lambdaflow.contracts.commits import Offsets, writer_ids
from lambdaflow.errors import FencedError, OffsetGapError
from lambdaflow.validation import RawRecord
from speed_layer.continuity import Gap, acknowledgements, find_gaps, fingerprint, gap_row, raise_for, raw_record
from speed_layer.fencing import Resync
from speed_layer.fetcher import Fetcher, FetchSpec, Polled
from speed_layer.logs import configure_logging
from speed_layer.metrics import SpeedMetrics
from speed_layer.microbatch import BatchResult, SpeedPipeline

#: The command that acknowledges a gap (named in the error that stops the layer).
ACKNOWLEDGE = "lambdaflow speed acknowledge-gap"
#: How often the consumer refreshes topic metadata (kafka-python's default is 5 minutes).
METADATA_MAX_AGE_MS = 10_000

log = logging.getLogger("lambdaflow.speed")


def fetch_range(config: dict[str, Any], start: Offsets, end: Offsets) -> list[RawRecord]:
    """Read exactly the records in ``[start, end)`` of every listed partition (for replaying a batch)."""
    from kafka import KafkaConsumer, TopicPartition

    wanted = {TopicPartition(t, int(p)): (start.get(t, {}).get(p, end[t][p]), end[t][p]) for t in end for p in end[t]}
    wanted = {tp: (lo, hi) for tp, (lo, hi) in wanted.items() if hi > lo}
    if not wanted:
        return []
    consumer = KafkaConsumer(**config, enable_auto_commit=False, group_id=None, isolation_level="read_committed")
    try:
        consumer.assign(list(wanted))
        for tp, (lo, _) in wanted.items():
            consumer.seek(tp, lo)
        out: list[RawRecord] = []
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < hi for tp, (_, hi) in wanted.items()):
            if time.monotonic() > deadline:
                ranges = ", ".join(f"{tp.topic}[{tp.partition}] {lo}..{hi - 1}" for tp, (lo, hi) in wanted.items())
                raise OffsetGapError(f"cannot re-read the last micro-batch's records ({ranges}) within 120s: expired or lost from Kafka?")
            for tp, batch in consumer.poll(timeout_ms=500).items():
                hi = wanted[tp][1]
                out += [raw_record(r) for r in batch if r.offset < hi]
        return out
    finally:
        consumer.close()


class SpeedLayer:
    """The consumer loop around :class:`~speed_layer.microbatch.SpeedPipeline`."""

    def __init__(self, settings: Settings, metrics_port: int | None = None) -> None:
        self.settings = settings
        self.pipeline = SpeedPipeline(settings)
        self.kafka = services.client_config(settings.profile)
        self.stopping = False
        #: where an acknowledged gap lets a partition continue: (topic, partition) → (recorded next offset, resume at)
        self.resume_at: dict[tuple[str, int], tuple[int, int]] = {}
        #: fingerprint of the last ingested record per topic/partition (cumulative, as committed)
        self.fingerprints: Offsets = {}
        port = settings.profile.speed.metrics_port if metrics_port is None else metrics_port
        self.metrics = SpeedMetrics(port)
        self.rebalanced = False
        #: where each topic/partition stands (the recorded positions, or past an acknowledged gap)
        self.positions: Offsets = {}

    def stop(self, *_: Any) -> None:
        """Finish the current micro-batch, then exit the loop."""
        self.stopping = True

    def _fetch_spec(self) -> FetchSpec:
        speed = self.settings.profile.speed
        topics = tuple(t for t in (self.pipeline.event_topic, self.pipeline.label_topic) if t)
        for topic in topics:
            services.ensure_topic(self.kafka, topic, self.settings.pipeline.source.partitions)
        consumer = dict(
            **self.kafka,
            group_id=speed.consumer_group,
            enable_auto_commit=False,
            # never jump silently: an out-of-range position is a gap or a reset, diagnosed in _next_batch
            auto_offset_reset="none",
            isolation_level="read_committed",  # records of aborted transactions are not events
            max_poll_records=min(speed.max_batch_records, 10_000),
            # static membership: a restarted instance takes its old place at once instead of
            # waiting a session timeout for the dead member to leave the group
            group_instance_id=f"{speed.consumer_group}-{speed.instance}",
            fetch_max_bytes=64 << 20,
            # a join that saw a topic without its partitions gets an empty assignment and is only corrected
            # by the next metadata refresh (5 min by default): the suspect of joins that never got data
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            **services.CONSUMER_TIMEOUTS,
        )
        return FetchSpec(
            consumer,
            # eager protocols only: every partition is revoked and re-read from the tables on a rebalance
            # (an incremental one would keep partitions whose fetched records are dropped)
            (
                "kafka.coordinator.assignors.range.RangePartitionAssignor",
                "kafka.coordinator.assignors.roundrobin.RoundRobinPartitionAssignor",
            ),
            topics,
            speed.max_batch_records,
            speed.max_batch_seconds,
            logging.getLogger().getEffectiveLevel(),
        )

    def _on_assigned(self, assigned: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        """Where each assigned partition is to be read from, as the tables say (runs with no batch in flight)."""
        recorded, self.fingerprints = self.pipeline.committed_position()
        # a process replacing this instance (same --instance) takes up its identity where the tables leave it
        self.pipeline.seq = self.pipeline.last_seq()
        positions = {t: dict(p) for t, p in recorded.items()}
        seek: dict[tuple[str, int], int | None] = {}
        for topic, partition in assigned:
            offset = recorded.get(topic, {}).get(str(partition))
            gap = self.resume_at.get((topic, partition))
            if gap is not None and gap[0] == offset:  # past an acknowledged gap, until a batch moves on
                offset = gap[1]
            seek[(topic, partition)] = offset
            if offset is not None:
                positions.setdefault(topic, {})[str(partition)] = offset
        self.positions = positions
        self.pipeline.believed = recorded  # what the tables say, past an acknowledged gap too
        self.rebalanced = True  # a writer that left may have left a batch half done
        return seek

    def run(
        self,
        max_batches: int | None = None,
        idle_exit_seconds: float | None = None,
        on_batch: Callable[[BatchResult], None] | None = None,
    ) -> list[BatchResult]:
        """Consume until stopped (or ``max_batches`` / ``idle_exit_seconds`` of silence, for tests and demos).

        Raises:
            FencedError: another process took this one's identity or partitions; nothing more was committed.
            OffsetGapError: the log does not continue where the tables say the layer stopped.
        """
        from kafka.errors import FencedInstanceIdError, UnreleasedInstanceIdError

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        # the champion first: a batch replayed by recovery is scored like any other
        self.pipeline.scorer.refresh(force=True)
        # the log must continue where the tables say the layer stopped before anything is read from it
        self._check_continuity()
        self._recover()
        self.positions = self.pipeline.start()
        speed = self.settings.profile.speed
        self.fetcher = Fetcher(self._fetch_spec(), self._on_revoked, self._on_assigned)
        results: list[BatchResult] = []
        idle_since = time.monotonic()
        caught_up = False
        checked = time.monotonic()
        self.fetcher.start()
        try:
            while not self.stopping:
                polled = self._next_batch()  # answers a rebalance first: between batches, nothing in flight
                self.pipeline.scorer.refresh()
                if self.rebalanced:
                    self.rebalanced = False
                    self._recover(reload=False)
                busy = polled is not None and bool(polled.records)
                if busy or time.monotonic() - checked > 1.0:  # before every batch: features must see the published W
                    checked = time.monotonic()
                    if self.pipeline.state_stale():
                        self.pipeline.load_state()
                if polled is not None and polled.generation != self.fetcher.generation:
                    # fetched before a rebalance or a resync: neither its records nor its progress count
                    caught_up, polled = False, None
                caught_up = polled.caught_up if polled is not None else caught_up
                if polled is None or not polled.records:
                    if not caught_up:
                        idle_since = time.monotonic()  # quiet because not yet assigned or fetching: not idle
                    elif idle_exit_seconds is not None and time.monotonic() - idle_since > idle_exit_seconds:
                        break
                    continue
                idle_since = time.monotonic()
                start, end, last = self._ranges(polled.records)
                try:
                    result = self.pipeline.process(polled.records, start, end, last=last)
                except Resync as exc:  # nothing was committed: read again from where the tables now stand
                    log.warning("%s after this process read the tables: reading again from the positions recorded", exc)
                    self._resync()
                    continue
                self.positions, self.fingerprints = self.pipeline.believed, self.pipeline.fingerprints
                for topic, parts in start.items():  # the recorded positions now lie past these partitions' gaps
                    for p in parts:
                        self.resume_at.pop((topic, int(p)), None)
                self.fetcher.commit_group({(t, int(p)): end[t][p] for t, parts in start.items() for p in parts})
                self.metrics.observe(result, polled.lag, polled.records)
                log.info("micro-batch %s", result.seq, extra={"batch": result.__dict__})
                results.append(result)
                if on_batch is not None:
                    on_batch(result)
                if max_batches is not None and len(results) >= max_batches:
                    break
        except (FencedInstanceIdError, UnreleasedInstanceIdError) as exc:
            member = f"{speed.consumer_group}-{speed.instance}"
            raise FencedError(
                f"another process joined consumer group {speed.consumer_group!r} as static member {member!r} "
                f"({type(exc).__name__}); this one stops (run one process per --instance)"
            ) from exc
        finally:
            self.fetcher.close()
            self.metrics.close()
        return results

    def _resync(self) -> None:
        """Take up the identity where the tables now leave it: sequence, positions, state, and the fetch positions."""
        recorded, self.fingerprints = self.pipeline.committed_position()
        self.pipeline.seq = self.pipeline.last_seq()
        self.pipeline.believed = recorded
        self.positions = {t: dict(p) for t, p in recorded.items()}
        self.pipeline.load_state()
        self.fetcher.reseek({(t, int(p)): offset for t, parts in recorded.items() for p, offset in parts.items()})

    def _on_revoked(self) -> None:
        """The group takes the partitions away: nothing to do but drop what was fetched (the generation moved)."""

    def _next_batch(self) -> Polled | None:
        from kafka.errors import OffsetOutOfRangeError

        try:
            return self.fetcher.next(timeout=0.2)
        except OffsetOutOfRangeError as exc:
            # the log moved under us (retention while lagging, a reset topic): say where, then stop;
            # the records fetched since are not committed, so the committed positions are where to look
            raise_for(find_gaps(self.kafka, self.positions, self.fingerprints), ACKNOWLEDGE)
            raise OffsetGapError(
                f"Kafka reports positions out of range ({exc}), but the log looks continuous now: restart the speed layer"
            ) from exc

    def _recover(self, reload: bool = True) -> None:
        for replayed in self.pipeline.recover(lambda s, e: fetch_range(self.kafka, s, e), reload):
            log.warning("recovered micro-batch %s", replayed.seq, extra={"batch": replayed.__dict__})

    def _ranges(self, records: list[RawRecord]) -> tuple[Offsets, Offsets, Offsets]:
        """Start offsets of this batch, the cumulative next offsets after it, and the last record's fingerprints."""
        start: Offsets = {}
        end: Offsets = {t: dict(p) for t, p in self.positions.items()}
        last: Offsets = {t: dict(p) for t, p in self.fingerprints.items()}
        newest: dict[tuple[str, str], RawRecord] = {}
        for r in records:
            p = str(r.partition)
            start.setdefault(r.topic, {}).setdefault(p, r.offset)
            start[r.topic][p] = min(start[r.topic][p], r.offset)
            end.setdefault(r.topic, {})[p] = max(end.get(r.topic, {}).get(p, 0), r.offset + 1)
            if (r.topic, p) not in newest or r.offset > newest[(r.topic, p)].offset:
                newest[(r.topic, p)] = r
        for (topic, p), r in newest.items():
            last.setdefault(topic, {})[p] = fingerprint(r)
        return start, end, last

    def _check_continuity(self) -> None:
        """Stop unless every partition's log continues where the tables say the layer stopped (or a gap was acknowledged).

        Raises:
            OffsetGapError: naming each partition, its offsets and the command that acknowledges the gap.
        """
        topics = {t for t in (self.pipeline.event_topic, self.pipeline.label_topic) if t}
        offsets, self.fingerprints = self.pipeline.committed_position()
        recorded = {t: p for t, p in offsets.items() if t in topics}  # topics still read
        acknowledged = acknowledgements(self.pipeline.tables.offset_gaps, writer_ids(self.settings))
        gaps = find_gaps(self.kafka, recorded, self.fingerprints)
        still_open = [g for g in gaps if (g.topic, g.partition, g.recorded_next) not in acknowledged]
        raise_for(still_open, ACKNOWLEDGE)
        for g in gaps:
            resume = acknowledged[(g.topic, g.partition, g.recorded_next)]
            self.resume_at[(g.topic, g.partition)] = (g.recorded_next, resume)
            log.warning("continuing %s[%s] at offset %s past an acknowledged gap", g.topic, g.partition, resume)


def acknowledge_gap(settings: Settings, topic: str, partition: int, reason: str, by: str) -> Gap:
    """Record that the gap of one partition is accepted as lost, so the speed layer continues past it.

    Raises:
        OffsetGapError: the partition has no gap to acknowledge.
    """
    pipeline = SpeedPipeline(settings)
    gaps = find_gaps(services.client_config(settings.profile), *pipeline.committed_position())
    gap = next((g for g in gaps if g.topic == topic and g.partition == partition), None)
    if gap is None:
        raise OffsetGapError(f"{topic}[{partition}] continues where the speed layer stopped: there is no gap to acknowledge")
    pipeline.tables.offset_gaps.append(gap_row(gap, pipeline.app_id, reason, by), operation="acknowledge-gap")
    return gap


def main(settings: Settings, max_batches: int | None = None, idle_exit_seconds: float | None = None) -> int:
    configure_logging()
    layer = SpeedLayer(settings)
    results = layer.run(max_batches=max_batches, idle_exit_seconds=idle_exit_seconds)
    log.info("stopped after %s micro-batches", len(results))
    return 0
