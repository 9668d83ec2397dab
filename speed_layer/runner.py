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
from lambdaflow.contracts.commits import Offsets
from lambdaflow.errors import OffsetGapError, ServiceError
from lambdaflow.validation import RawRecord
from speed_layer.continuity import Gap, acknowledgements, find_gaps, fingerprint, gap_row, raise_for, raw_record
from speed_layer.metrics import SpeedMetrics
from speed_layer.microbatch import BatchResult, SpeedPipeline

#: The command that acknowledges a gap (named in the error that stops the layer).
ACKNOWLEDGE = "lambdaflow speed acknowledge-gap"
#: How often the consumer refreshes topic metadata (kafka-python's default is 5 minutes).
METADATA_MAX_AGE_MS = 10_000
#: How long a consumer may stay without partitions before it is made anew (a join normally takes seconds).
RESTART_UNASSIGNED_SECONDS = 30.0

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

    def stop(self, *_: Any) -> None:
        """Finish the current micro-batch, then exit the loop."""
        self.stopping = True

    def _consumer(self) -> Any:
        from kafka import KafkaConsumer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

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
            group_instance_id=f"{speed.consumer_group}-0",
            fetch_max_bytes=64 << 20,
            # a join that saw a topic without its partitions is corrected only by a metadata refresh
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            **services.CONSUMER_TIMEOUTS,
        )
        layer = self

        class SeekToDelta(ConsumerRebalanceListener):
            """Delta, not the group, says where to resume."""

            def on_partitions_revoked(self, revoked: Any) -> None:
                pass

            def on_partitions_assigned(self, assigned: Any) -> None:
                recorded = layer.pipeline.committed_offsets()
                positions = {t: dict(p) for t, p in recorded.items()}
                for tp in assigned:
                    offset = recorded.get(tp.topic, {}).get(str(tp.partition))
                    gap = layer.resume_at.get((tp.topic, tp.partition))
                    if gap is not None and gap[0] == offset:  # past an acknowledged gap, until a batch moves on
                        offset = gap[1]
                    if offset is None:
                        consumer.seek_to_beginning(tp)
                    else:
                        consumer.seek(tp, offset)
                        positions.setdefault(tp.topic, {})[str(tp.partition)] = offset
                layer.positions = positions
                log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

        topics = [t for t in (self.pipeline.event_topic, self.pipeline.label_topic) if t]
        for topic in topics:
            services.ensure_topic(self.kafka, topic, self.settings.pipeline.source.partitions)
            _wait_for_partitions(consumer, topic)
        consumer.subscribe(topics, listener=SeekToDelta())
        return consumer

    def run(
        self,
        max_batches: int | None = None,
        idle_exit_seconds: float | None = None,
        on_batch: Callable[[BatchResult], None] | None = None,
    ) -> list[BatchResult]:
        """Consume until stopped (or ``max_batches`` / ``idle_exit_seconds`` of silence, for tests and demos)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        # the champion first: a batch replayed by recovery is scored like any other
        self.pipeline.scorer.refresh(force=True)
        # the log must continue where the tables say the layer stopped before anything is read from it
        self._check_continuity()
        replayed = self.pipeline.recover(lambda s, e: fetch_range(self.kafka, s, e))
        if replayed:
            log.warning("recovered micro-batch %s", replayed.seq, extra={"batch": replayed.__dict__})
        self.positions: Offsets = self.pipeline.committed_offsets()
        consumer = self._consumer()
        seq = self.pipeline.last_seq()
        results: list[BatchResult] = []
        idle_since = time.monotonic()
        speed = self.settings.profile.speed
        try:
            while not self.stopping:
                records = self._poll_batch(consumer, speed.max_batch_records, speed.max_batch_seconds)
                if self._unassigned_since is not None and time.monotonic() - self._unassigned_since > RESTART_UNASSIGNED_SECONDS:
                    # kafka-python 3.0 has been seen never to join (CI stop 17): start over as the same static member
                    log.warning("no partitions assigned for %.0f s: starting over with a new Kafka consumer", RESTART_UNASSIGNED_SECONDS)
                    consumer.close(autocommit=False)
                    consumer = self._consumer()
                    self._unassigned_since = None
                self.pipeline.scorer.refresh()
                if self.pipeline.state_stale():
                    self.pipeline.load_state()
                if not records:
                    if not self._caught_up(consumer):
                        idle_since = time.monotonic()  # quiet because not yet assigned or fetching: not idle
                    elif idle_exit_seconds is not None and time.monotonic() - idle_since > idle_exit_seconds:
                        break
                    continue
                idle_since = time.monotonic()
                start, end, last = self._ranges(records)
                seq += 1
                result = self.pipeline.process(records, seq, start, end, last=last)
                self.positions, self.fingerprints = end, last
                self.resume_at.clear()  # the recorded positions now lie past every acknowledged gap
                self._commit_group(consumer, end)
                self.metrics.observe(result, self._lag(consumer))
                log.info("micro-batch %s", seq, extra={"batch": result.__dict__})
                results.append(result)
                if on_batch is not None:
                    on_batch(result)
                if max_batches is not None and len(results) >= max_batches:
                    break
        finally:
            consumer.close(autocommit=False)
            self.metrics.close()
        return results

    def _poll_batch(self, consumer: Any, max_records: int, max_seconds: float) -> list[RawRecord]:
        from kafka.errors import OffsetOutOfRangeError

        records: list[RawRecord] = []
        fetched: set[tuple[str, int, int]] = set()
        deadline = time.monotonic() + max_seconds
        while len(records) < max_records and not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                polled = consumer.poll(timeout_ms=int(remaining * 1000), max_records=max_records - len(records))
            except OffsetOutOfRangeError as exc:
                # the log moved under us (retention while lagging, a reset topic): say where, then stop;
                # this batch's records are not committed, so the committed positions are where to look
                raise_for(find_gaps(self.kafka, self.positions, self.fingerprints), ACKNOWLEDGE)
                raise OffsetGapError(
                    f"Kafka reports positions out of range ({exc}), but the log looks continuous now: restart the speed layer"
                ) from exc
            if not polled and not consumer.assignment():
                time.sleep(0.05)  # poll returns at once while the group coordinator is unknown: wait, do not spin
                self._unassigned_since = self._unassigned_since or time.monotonic()
            elif consumer.assignment():
                self._unassigned_since = None
            for batch in polled.values():
                for r in batch:
                    # a rebalance in the middle of a batch seeks back to the recorded positions: the records
                    # fetched again are already in this batch
                    if (r.topic, r.partition, r.offset) not in fetched:
                        fetched.add((r.topic, r.partition, r.offset))
                        records.append(raw_record(r))
        return records

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
        acknowledged = acknowledgements(self.pipeline.tables.offset_gaps, self.pipeline.app_id)
        gaps = find_gaps(self.kafka, recorded, self.fingerprints)
        still_open = [g for g in gaps if (g.topic, g.partition, g.recorded_next) not in acknowledged]
        raise_for(still_open, ACKNOWLEDGE)
        for g in gaps:
            resume = acknowledged[(g.topic, g.partition, g.recorded_next)]
            self.resume_at[(g.topic, g.partition)] = (g.recorded_next, resume)
            log.warning("continuing %s[%s] at offset %s past an acknowledged gap", g.topic, g.partition, resume)

    def _commit_group(self, consumer: Any, end: Offsets) -> None:
        from kafka import OffsetAndMetadata, TopicPartition

        offsets = {TopicPartition(t, int(p)): OffsetAndMetadata(o, "", -1) for t, ps in end.items() for p, o in ps.items()}
        try:
            consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - group offsets are for monitoring; Delta holds the truth
            log.warning("could not commit group offsets (monitoring only): %s", exc)

    def _caught_up(self, consumer: Any) -> bool:
        """True when partitions are assigned and every position has reached its high-water mark."""
        assigned = consumer.assignment()
        if not assigned:
            return False
        for tp in assigned:
            high = consumer.highwater(tp)
            if high is None or consumer.position(tp) < high:
                return False
        return True

    def _lag(self, consumer: Any) -> int:
        lag = 0
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None:
                lag += max(0, high - consumer.position(tp))
        return lag


def _wait_for_partitions(consumer: Any, topic: str, seconds: float = 30.0) -> None:
    """Block until the consumer's metadata lists the topic's partitions.

    A group leader whose metadata lacks them (a topic created a moment ago) assigns nothing, and kafka-python
    3.0 does not rejoin when they appear: the member sat with no partitions until the suite's drain timed out
    ("No partition metadata for topic …", then an empty assignment: CI stop 17).

    Raises:
        ServiceError: the partitions are still unknown after ``seconds``.
    """
    deadline = time.monotonic() + seconds
    while not consumer.partitions_for_topic(topic):
        if time.monotonic() > deadline:
            raise ServiceError(f"Kafka lists no partitions for topic {topic!r} after {seconds:.0f} s")
        time.sleep(0.1)


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
