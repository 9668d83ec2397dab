"""The long-running speed layer: a kafka-python consumer in a group, feeding micro-batches.

Start-up: reconcile the tables (replay the last batch where a table is behind),
then seek every assigned partition to the offsets recorded in the last
``master/events`` commit — Kafka's group offsets are only for lag monitoring
and are committed after the Delta commits. A micro-batch closes at
``speed.max_batch_records`` records or after ``speed.max_batch_seconds``.
SIGTERM/SIGINT finish the current batch, then stop.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from lambdaflow import services
from lambdaflow.config import Settings
from lambdaflow.contracts.commits import Offsets, writer_ids
from lambdaflow.errors import FencedError, OffsetGapError, ServiceError
from lambdaflow.validation import RawRecord
from speed_layer.continuity import Gap, acknowledgements, find_gaps, fingerprint, gap_row, raise_for, raw_record
from speed_layer.fetcher import Fetcher, Polled
from speed_layer.metrics import SpeedMetrics
from speed_layer.microbatch import BatchResult, SpeedPipeline

#: The command that acknowledges a gap (named in the error that stops the layer).
ACKNOWLEDGE = "lambdaflow speed acknowledge-gap"
#: How often the consumer refreshes topic metadata (kafka-python's default is 5 minutes).
METADATA_MAX_AGE_MS = 10_000
#: How long without an assignment before the layer says so (and again after each such period).
UNASSIGNED_WARNING_SECONDS = 30.0

log = logging.getLogger("lambdaflow.speed")


class JsonFormatter(logging.Formatter):
    """One JSON object per log line (structured logs)."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in ("batch", "watermark", "rows", "lag", "offsets"):
                payload[key] = value
        if record.exc_info:
            payload["error"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("kafka", "urllib3", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kafka-python 3 warns whenever its event loop is busy for >100 ms, which our batch commits make routine
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)


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
        self._unassigned_since: float | None = None
        self.rebalanced = False
        #: where each topic/partition stands (the recorded positions, or past an acknowledged gap)
        self.positions: Offsets = {}

    def stop(self, *_: Any) -> None:
        """Finish the current micro-batch, then exit the loop."""
        self.stopping = True

    def _consumer(self) -> Any:
        from kafka import KafkaConsumer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener
        from kafka.coordinator.assignors.range import RangePartitionAssignor
        from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

        speed = self.settings.profile.speed
        consumer = KafkaConsumer(
            **self.kafka,
            group_id=speed.consumer_group,
            enable_auto_commit=False,
            # never jump silently: an out-of-range position is a gap or a reset, diagnosed in _poll_batch
            auto_offset_reset="none",
            isolation_level="read_committed",  # records of aborted transactions are not events
            max_poll_records=min(speed.max_batch_records, 10_000),
            # static membership: a restarted instance takes its old place at once instead of
            # waiting a session timeout for the dead member to leave the group
            group_instance_id=f"{speed.consumer_group}-{speed.instance}",
            # eager protocols only: every partition is revoked and re-seeked from the tables on a rebalance
            # (an incremental one would keep partitions whose fetched records the fetcher drops)
            partition_assignment_strategy=(RangePartitionAssignor, RoundRobinPartitionAssignor),
            fetch_max_bytes=64 << 20,
            # a join that saw a topic without its partitions gets an empty assignment and is only corrected
            # by the next metadata refresh (5 min by default): the suspect of joins that never got data
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            **services.CONSUMER_TIMEOUTS,
        )
        layer = self

        class SeekToDelta(ConsumerRebalanceListener):
            """Delta, not the group, says where to resume; a rebalance waits for the batch in flight."""

            def on_partitions_revoked(self, revoked: Any) -> None:
                with layer.fetcher.lock:
                    layer.fetcher.new_generation()

            def on_partitions_assigned(self, assigned: Any) -> None:
                with layer.fetcher.lock:
                    layer._seek_assigned(consumer, assigned)
                    layer.fetcher.new_generation()

        topics = [t for t in (self.pipeline.event_topic, self.pipeline.label_topic) if t]
        for topic in topics:
            services.ensure_topic(self.kafka, topic, self.settings.pipeline.source.partitions)
            _wait_for_partitions(consumer, topic)
        consumer.subscribe(topics, listener=SeekToDelta())
        return consumer

    def _seek_assigned(self, consumer: Any, assigned: Any) -> None:
        """Seek every assigned partition to where the tables say it stands (runs with no batch in flight)."""
        self.fetcher.mark_joined()
        recorded, self.fingerprints = self.pipeline.committed_position()
        # a process replacing this instance (same --instance) takes up its identity where the tables leave it
        self.pipeline.seq = self.pipeline.last_seq()
        positions = {t: dict(p) for t, p in recorded.items()}
        for tp in assigned:
            offset = recorded.get(tp.topic, {}).get(str(tp.partition))
            gap = self.resume_at.get((tp.topic, tp.partition))
            if gap is not None and gap[0] == offset:  # past an acknowledged gap, until a batch moves on
                offset = gap[1]
            if offset is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)
                positions.setdefault(tp.topic, {})[str(tp.partition)] = offset
        self.positions = positions
        self.pipeline.believed = recorded  # what the tables say, past an acknowledged gap too
        self._unassigned_since = None
        self.rebalanced = True  # a writer that left may have left a batch half done
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

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
        self.fetcher = Fetcher(self._consumer, speed.max_batch_records, speed.max_batch_seconds, self._warn_if_unassigned)
        results: list[BatchResult] = []
        idle_since = time.monotonic()
        caught_up = False
        checked = time.monotonic()
        self.fetcher.start()
        try:
            while not self.stopping:
                polled = self._next_batch()
                self.pipeline.scorer.refresh()
                if self.rebalanced:  # outside the lock: the rebalance callbacks run on kafka-python's network thread
                    self.rebalanced = False
                    self._recover(reload=False)
                with self.fetcher.lock:  # a rebalance waits for this batch, and drops what was fetched before it
                    busy = polled is not None and bool(polled.records)
                    if busy or time.monotonic() - checked > 1.0:  # before every batch: features must see the published W
                        checked = time.monotonic()
                        if self.pipeline.state_stale():
                            self.pipeline.load_state()
                    caught_up = polled.caught_up if polled is not None else caught_up
                    if polled is None or not polled.records or polled.generation != self.fetcher.generation:
                        if not caught_up:
                            idle_since = time.monotonic()  # quiet because not yet assigned or fetching: not idle
                        elif idle_exit_seconds is not None and time.monotonic() - idle_since > idle_exit_seconds:
                            break
                        continue
                    idle_since = time.monotonic()
                    start, end, last = self._ranges(polled.records)
                    result = self.pipeline.process(polled.records, start, end, last=last)
                    self.positions, self.fingerprints = self.pipeline.believed, self.pipeline.fingerprints
                    for topic, parts in start.items():  # the recorded positions now lie past these partitions' gaps
                        for p in parts:
                            self.resume_at.pop((topic, int(p)), None)
                self.fetcher.commit_group(_group_offsets(start, end))
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
            self.fetcher.stop()
            self.fetcher.join(timeout=10)
            self.fetcher.consumer.close(autocommit=False)
            self.metrics.close()
        return results

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

    def _warn_if_unassigned(self, consumer: Any) -> None:
        """Say so, every :data:`UNASSIGNED_WARNING_SECONDS`, while the group has given this instance nothing."""
        now = time.monotonic()
        since = self._unassigned_since = self._unassigned_since or now
        if now - since >= UNASSIGNED_WARNING_SECONDS:
            self._unassigned_since = now
            log.warning(
                "no partitions assigned for %.0f s (subscribed to %s); the group may be rebalancing",
                now - since,
                sorted(consumer.subscription() or ()),
            )

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


def _wait_for_partitions(consumer: Any, topic: str, seconds: float = 30.0) -> None:
    """Block until the consumer's metadata lists the topic's partitions.

    A group leader whose metadata lacks them (a topic created a moment ago) assigns nothing, and kafka-python
    3.0 does not rejoin when they appear: the member sat with no partitions until the drain timed out
    ("No partition metadata for topic …", then "assigned []": the suite's stuck first joins).
    """
    deadline = time.monotonic() + seconds
    while not consumer.partitions_for_topic(topic):
        if time.monotonic() > deadline:
            raise ServiceError(f"Kafka lists no partitions for topic {topic!r} after {seconds:.0f} s")
        time.sleep(0.1)


def _group_offsets(start: Offsets, end: Offsets) -> dict[Any, Any]:
    """Group offsets of a batch's partitions (the consumer group's progress, for lag monitoring only)."""
    from kafka import OffsetAndMetadata, TopicPartition

    return {TopicPartition(t, int(p)): OffsetAndMetadata(end[t][p], "", -1) for t, parts in start.items() for p in parts}


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
