"""Continuity of the Kafka log: no record skipped without a trace, none replayed wrongly.

The speed layer resumes every partition at the next offset recorded in its last
``master/events`` commit. That is only right while the log it reads is the log it
recorded. Three things break it, and each must stop the layer with an error that
names the topic, the partition and the offsets concerned:

* **retention gap** — the log now starts after the recorded next offset (records
  expired before they were read, e.g. an outage longer than retention);
* **reset** — the log now ends before the recorded next offset (the topic was
  deleted and recreated, or the broker lost its data);
* **recreated and refilled** — the log has at least as many records again, but the
  record just before the recorded position is not the one that was ingested
  (compared by a fingerprint kept in the commit metadata).

Only an operator's acknowledgement (``lambdaflow speed acknowledge-gap``), recorded
in the ``offset_gaps`` table, lets the layer continue — from the start of the log
as it is now. Replaying a batch for recovery checks that exactly the recorded
records came back.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from lambdaflow.contracts.commits import Offsets
from lambdaflow.contracts.speed import OFFSET_GAPS_SCHEMA
from lambdaflow.errors import OffsetGapError
from lambdaflow.tables import Table
from lambdaflow.validation import RawRecord

__all__ = ["Gap", "acknowledgements", "check_replay", "fingerprint", "find_gaps", "gap_row", "raise_for", "raw_record"]

log = logging.getLogger(__name__)

GapKind = Literal["retention", "reset", "recreated"]


@dataclass(frozen=True)
class Gap:
    """A partition whose log no longer continues from the recorded position."""

    topic: str
    partition: int
    recorded_next: int
    log_start: int
    kind: GapKind

    def describe(self) -> str:
        if self.kind == "retention":
            what = f"offsets {self.recorded_next}..{self.log_start - 1} expired before they were read (the log starts at {self.log_start})"
        elif self.kind == "reset":
            what = f"the log ends before the recorded next offset {self.recorded_next}: the topic was reset or recreated"
        else:
            what = f"the record at offset {self.recorded_next - 1} is not the one ingested: the topic was recreated"
        return f"{self.topic}[{self.partition}]: {what}"


def fingerprint(record: RawRecord) -> int:
    """A checksum of a record's key and value: tells the ingested record from another at the same offset."""
    return zlib.crc32(record.value or b"", zlib.crc32(b"\x00" + (record.key or b"")))


def _probe(consumer: Any, tp: Any, offset: int, timeout: float) -> tuple[Literal["record", "out_of_range", "nothing"], Any]:
    """Fetch the record at ``offset``: ("record", r), ("out_of_range", None) or ("nothing", None) on timeout."""
    from kafka.errors import OffsetOutOfRangeError

    consumer.assign([tp])
    consumer.seek(tp, offset)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            polled = consumer.poll(timeout_ms=500, max_records=1)
        except OffsetOutOfRangeError:
            return "out_of_range", None
        for records in polled.values():
            if records:
                return "record", records[0]
    return "nothing", None


def find_gaps(config: dict[str, Any], recorded: Offsets, fingerprints: Offsets, timeout: float = 10.0) -> list[Gap]:
    """Every partition with a recorded position whose log does not continue from it.

    Args:
        config: Kafka client settings (``services.client_config``).
        recorded: next offset per topic/partition, from the last ``master/events`` commit.
        fingerprints: :func:`fingerprint` of the last ingested record per topic/partition.
    """
    from kafka import KafkaConsumer, TopicPartition

    gaps: list[Gap] = []
    # The check also runs after a rebalance, which a broker restart causes: wait for the broker to come back
    # (a restarted Apache Kafka recovers its log first) instead of failing the layer on the first refusal.
    settings = {"bootstrap_timeout_ms": 120_000, **config}
    consumer = KafkaConsumer(
        **settings, group_id=None, enable_auto_commit=False, auto_offset_reset="none", isolation_level="read_committed"
    )
    try:
        for topic, partitions in recorded.items():
            for text, next_offset in partitions.items():
                if next_offset <= 0:
                    continue
                tp = TopicPartition(topic, int(text))
                outcome, record = _probe(consumer, tp, next_offset - 1, timeout)
                if outcome == "record":
                    expected = fingerprints.get(topic, {}).get(text)
                    if record.offset == next_offset - 1 and expected is not None and fingerprint(raw_record(record)) != expected:
                        gaps.append(Gap(topic, int(text), next_offset, consumer.beginning_offsets([tp])[tp], "recreated"))
                elif outcome == "out_of_range":
                    start = consumer.beginning_offsets([tp])[tp]
                    if start > next_offset:
                        gaps.append(Gap(topic, int(text), next_offset, start, "retention"))
                    elif start < next_offset:  # the wanted record is not below the start, so the log ends before it
                        gaps.append(Gap(topic, int(text), next_offset, start, "reset"))
                    # start == next_offset: the last ingested record expired, nothing after it did
                else:  # nothing came back: the log may end before the record (its tail was lost)
                    end = consumer.end_offsets([tp])[tp]
                    if end < next_offset:
                        gaps.append(Gap(topic, int(text), next_offset, consumer.beginning_offsets([tp])[tp], "reset"))
                    else:
                        log.warning(
                            "could not read %s[%s] at offset %s within %ss to check continuity", topic, text, next_offset - 1, timeout
                        )
    finally:
        consumer.close()
    return gaps


def raw_record(record: Any) -> RawRecord:
    """A kafka-python ``ConsumerRecord`` as the :class:`RawRecord` the pipeline works with."""
    return RawRecord(record.topic, record.partition, record.offset, record.key, record.value, record.timestamp)


def acknowledgements(table: Table, apps: Collection[str]) -> dict[tuple[str, int, int], int]:
    """(topic, partition, recorded next offset) → offset to resume at, for every gap an operator acknowledged.

    Args:
        apps: the writers whose acknowledgements count: every instance of the group, since the positions
            (and so the gaps) are the group's, whichever instance the operator ran the command as.
    """
    if not table.exists():
        return {}
    rows = table.snapshot().to_arrow().to_pylist()
    return {(r["topic"], r["partition"], r["recorded_next"]): r["resume_at"] for r in rows if r["app"] in apps}


def raise_for(gaps: Sequence[Gap], command: str) -> None:
    """Stop with one error naming every gap and the command that acknowledges it.

    Raises:
        OffsetGapError: when ``gaps`` is not empty.
    """
    if gaps:
        listed = "; ".join(g.describe() for g in gaps)
        first = gaps[0]
        raise OffsetGapError(
            f"the Kafka log does not continue where the speed layer stopped: {listed}. Nothing was ingested past it. "
            f"If the records are lost for good, acknowledge each gap to continue from the log's start, e.g. "
            f"`{command} --topic {first.topic} --partition {first.partition} --reason '...'`"
        )


def gap_row(gap: Gap, app: str, reason: str, by: str) -> pa.Table:
    """The ``offset_gaps`` row that records an acknowledged gap."""
    row = {
        "topic": gap.topic,
        "partition": gap.partition,
        "recorded_next": gap.recorded_next,
        "resume_at": gap.log_start,
        "kind": gap.kind,
        "reason": reason,
        "app": app,
        "acknowledged_by": by,
        "acknowledged_at": dt.datetime.now(dt.timezone.utc),
    }
    return pa.Table.from_pylist([row], schema=OFFSET_GAPS_SCHEMA)


def check_replay(records: Sequence[RawRecord], start: Offsets, end: Offsets, expected: int | None, last: Offsets | None = None) -> None:
    """A replayed batch must be exactly the records its commit recorded.

    The commit recorded the batch's offset ranges and how many records it held; a
    replay that brings back fewer (expired since) or more must not be committed as
    if it were the same batch. Offsets inside a range may legitimately have holes
    (transaction markers), so the count decides and the holes name the problem.

    The fingerprint of each partition's last record must match the one the commit recorded
    (a recreated topic can hold as many records at the same offsets).

    Raises:
        OffsetGapError: the replay is not the recorded batch.
    """
    newest: dict[tuple[str, str], RawRecord] = {}
    for r in records:
        key = (r.topic, str(r.partition))
        if key not in newest or r.offset > newest[key].offset:
            newest[key] = r
    for (topic, text), record in newest.items():
        recorded = (last or {}).get(topic, {}).get(text)
        if recorded is not None and record.offset == end.get(topic, {}).get(text, -1) - 1 and fingerprint(record) != recorded:
            raise OffsetGapError(
                f"cannot replay the last micro-batch: {topic}[{text}] offset {record.offset} holds another record than the one "
                "ingested (the topic was recreated); the tables behind cannot be completed from this log"
            )
    if expected is None or len(records) == expected:
        return
    got: dict[tuple[str, str], set[int]] = {}
    for r in records:
        got.setdefault((r.topic, str(r.partition)), set()).add(r.offset)
    holes = []
    for topic, partitions in end.items():
        for text, hi in partitions.items():
            lo = start.get(topic, {}).get(text, hi)
            missing = set(range(lo, hi)) - got.get((topic, text), set())
            if missing:
                holes.append(f"{topic}[{text}] offsets {min(missing)}..{max(missing)} ({len(missing)} missing)")
    raise OffsetGapError(
        f"cannot replay the last micro-batch: Kafka returned {len(records)} records, its commit recorded {expected}"
        + (f"; not in Kafka any more: {', '.join(holes)}" if holes else "")
        + ". The tables behind cannot be completed from the log."
    )
