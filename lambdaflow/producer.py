"""Sending events to Kafka: generated sample data or a replayed file, keyed by the partition key.

Every record is acknowledged by the broker (``acks=all``) or counted as failed;
a run with failures raises :class:`ProduceError` naming how many and why —
nothing is dropped silently.

* :func:`produce` sends in-memory :class:`Stream` s (the sample's events and labels, see
  :func:`pipeline_streams`), interleaved by time so that labels follow the events they are about.
* :func:`produce_rows` sends an already ordered sequence of tables to one topic: a replayed file,
  read and time-sorted by :mod:`lambdaflow.replay` (:func:`replay_target` says where it goes and
  with which declared fields).
* :func:`produce_live` keeps sending fresh slices until stopped.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.config import FieldSpec, PipelineConfig
from lambdaflow.errors import ConfigError, ProduceError
from lambdaflow.replay import CHUNK_ROWS  # one chunk size for what a replay hands out and what is sent at a time
from lambdaflow.services import Endpoint, connect_kwargs

__all__ = [
    "CHUNK_ROWS",
    "ProduceReport",
    "ReplayTarget",
    "Stream",
    "encode_row",
    "in_time_order",
    "pipeline_streams",
    "produce",
    "produce_live",
    "produce_rows",
    "replay_target",
    "time_values",
]


@dataclass
class ProduceReport:
    """Counts of one produce run."""

    sent: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.sent.values())


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat(timespec="microseconds") + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode_row(row: dict[str, Any]) -> bytes:
    """One event as the JSON bytes a topic carries (timestamps as ISO 8601 UTC with a ``Z``)."""
    return json.dumps(row, default=_json_default, separators=(",", ":"), ensure_ascii=False).encode()


def time_values(table: pa.Table, time_column: str | None) -> np.ndarray | None:
    """Event times as int64 microseconds, or None when the column is absent or not all parseable.

    Files may hold malformed rows on purpose (to exercise quarantine); those
    are replayed in file order rather than refused.
    """
    if not time_column or time_column not in table.column_names or table.num_rows == 0:
        return None
    column = table.column(time_column)
    try:
        if not pa.types.is_timestamp(column.type):
            column = pc.cast(column, pa.timestamp("us", tz="UTC"))
        values = pc.cast(column, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if values.null_count:
        return None
    return values.to_numpy(zero_copy_only=False)


def in_time_order(table: pa.Table, time_column: str | None) -> pa.Table:
    """Sort rows by ``time_column`` (stable) when every row has a parseable time; else keep file order."""
    times = time_values(table, time_column)
    if times is None:
        return table
    return table.take(pa.array(np.argsort(times, kind="stable")))


# --------------------------------------------------------------------------- what to send where


@dataclass(frozen=True)
class Stream:
    """Rows for one topic, in the order they must be sent."""

    topic: str
    rows: pa.Table
    key_column: str | None
    time_column: str | None


def pipeline_streams(pipeline: PipelineConfig, events: pa.Table, labels: pa.Table | None = None, topic: str | None = None) -> list[Stream]:
    """Events to the source topic (or ``topic``) and labels to the label topic, keyed by the partition key."""
    ev = pipeline.events
    streams = [Stream(topic or pipeline.source.topic, events, ev.partition_key, ev.time_column)]
    if labels is not None and pipeline.labels is not None and labels.num_rows:
        streams.append(Stream(pipeline.labels.topic, labels, ev.partition_key, pipeline.labels.time_column))
    return streams


@dataclass(frozen=True)
class ReplayTarget:
    """Where a replayed file goes and how it is read: one stream of the pipeline."""

    stream: Literal["events", "labels"]
    topic: str
    fields: dict[str, FieldSpec]
    time_column: str
    key_column: str


def replay_target(pipeline: PipelineConfig, stream: str = "events", topic: str | None = None) -> ReplayTarget:
    """The topic (``topic`` or the stream's own), declared fields, time column and key of a stream.

    Raises:
        ConfigError: ``labels`` of a pipeline without a labels section.
        ValueError: a stream other than ``events`` or ``labels``.
    """
    key = pipeline.events.partition_key
    if stream == "events":
        ev = pipeline.events
        return ReplayTarget("events", topic or pipeline.source.topic, ev.fields, ev.time_column, key)
    if stream == "labels":
        if pipeline.labels is None:
            raise ConfigError(f"pipeline {pipeline.name!r} has no labels section: there is no label stream to replay to")
        lb = pipeline.labels
        return ReplayTarget("labels", topic or lb.topic, lb.fields, lb.time_column, key)
    raise ValueError(f"unknown stream {stream!r}; expected 'events' or 'labels'")


def _merged_chunks(streams: list[Stream]) -> Iterator[tuple[Stream, pa.Table]]:
    """Chunks of every stream, interleaved by time so that labels follow the events they are about."""
    cursors = [0] * len(streams)
    times = [time_values(s.rows, s.time_column) for s in streams]
    while True:
        live = [i for i, s in enumerate(streams) if cursors[i] < s.rows.num_rows]
        if not live:
            return

        # The stream whose next row is earliest sends a chunk up to the next row of any other stream.
        def head(i: int) -> float:
            t = times[i]
            return float(t[cursors[i]]) if t is not None else float("-inf")

        i = min(live, key=head)
        end = min(cursors[i] + CHUNK_ROWS, streams[i].rows.num_rows)
        others = [head(j) for j in live if j != i]
        head_times = times[i]
        if others and head_times is not None:
            limit = min(others)
            end = min(end, cursors[i] + max(1, int(np.searchsorted(head_times[cursors[i] : end], limit, side="right"))))
        yield streams[i], streams[i].rows.slice(cursors[i], end - cursors[i])
        cursors[i] = end


# --------------------------------------------------------------------------- sending


def _send(
    bootstrap: Endpoint,
    topics: list[str],
    chunks: Iterable[tuple[str, str | None, pa.Table]],
    *,
    rate: float | None,
    on_progress: Callable[[int], None] | None,
    producer_config: dict[str, Any] | None,
) -> ProduceReport:
    """Send (topic, key column, rows) chunks in order; see :func:`produce`."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    config = {"acks": "all", "linger_ms": 20, "batch_size": 256 << 10, "retries": 10, "max_in_flight_requests_per_connection": 1}
    config.update(producer_config or {})
    producer = KafkaProducer(**connect_kwargs(bootstrap), **config)
    report = ProduceReport(sent={t: 0 for t in topics})
    started = time.monotonic()

    def failed(exc: BaseException) -> None:
        report.failed += 1
        if len(report.errors) < 5:
            report.errors.append(repr(exc))

    sent_total = 0
    # paced every ~10 ms, not per chunk: a chunk of 5,000 rows at 5,000/s was one burst a second
    step = max(1, int(rate // 100)) if rate else 0

    def pace(sent: int) -> None:
        ahead = sent / rate - (time.monotonic() - started) if rate else 0.0
        if ahead > 0:
            time.sleep(ahead)

    try:
        for topic, key_column, chunk in chunks:
            keys = chunk.column(key_column).to_pylist() if key_column in chunk.column_names else [None] * chunk.num_rows
            for i, (key, row) in enumerate(zip(keys, chunk.to_pylist())):
                if step and i % step == 0:
                    pace(sent_total + i)
                key_bytes = None if key is None else str(key).encode()
                try:
                    producer.send(topic, key=key_bytes, value=encode_row(row)).add_errback(failed)
                except KafkaError as exc:  # rejected before sending (e.g. too large): counted, not lost
                    failed(exc)
            report.sent[topic] = report.sent.get(topic, 0) + chunk.num_rows
            sent_total += chunk.num_rows
            if on_progress:
                on_progress(chunk.num_rows)
            pace(sent_total)
        producer.flush()
    finally:
        producer.close()
    report.seconds = time.monotonic() - started
    if report.failed:
        raise ProduceError(f"{report.failed} of {report.total} records were not acknowledged by the broker; first errors: {report.errors}")
    return report


def produce(
    bootstrap: Endpoint,
    streams: list[Stream],
    *,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    producer_config: dict[str, Any] | None = None,
) -> ProduceReport:
    """Send the rows of every stream, interleaved by time, keyed by their key column.

    Args:
        bootstrap: Kafka bootstrap servers.
        streams: what to send where.
        rate: records per second to stay under (None: as fast as the broker takes them).
        on_progress: called with the number of records just handed to the producer.
        producer_config: extra kafka-python producer settings.

    Raises:
        ProduceError: some records were not acknowledged; the report says how many.
    """
    chunks = ((s.topic, s.key_column, c) for s, c in _merged_chunks(streams))
    return _send(bootstrap, [s.topic for s in streams], chunks, rate=rate, on_progress=on_progress, producer_config=producer_config)


def produce_rows(
    bootstrap: Endpoint,
    topic: str,
    rows: Iterable[pa.Table],
    key_column: str | None,
    *,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    producer_config: dict[str, Any] | None = None,
) -> ProduceReport:
    """Send tables of rows to one topic in the order given (e.g. a :class:`~lambdaflow.replay.TimeSorted` replay), keyed by ``key_column``.

    Raises:
        ProduceError: some records were not acknowledged; the report says how many.
    """
    chunks = ((topic, key_column, table) for table in rows)
    return _send(bootstrap, [topic], chunks, rate=rate, on_progress=on_progress, producer_config=producer_config)


def produce_live(
    bootstrap: Endpoint,
    make_streams: Callable[[int, dt.datetime, int], list[Stream]],
    rate: float,
    chunk_seconds: float = 10.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Keep producing fresh events at ``rate`` per second, one ``chunk_seconds`` slice at a time, until stopped.

    Args:
        make_streams: (events, start time, chunk number) → the streams of one slice.

    Returns:
        How many records were sent.
    """
    sent, chunk = 0, 0
    while not should_stop():
        started = time.monotonic()
        n = max(1, int(rate * chunk_seconds))
        streams = make_streams(n, dt.datetime.now(dt.timezone.utc), chunk)
        sent += produce(bootstrap, streams, rate=rate * 1.05).total
        chunk += 1
        time.sleep(max(0.0, chunk_seconds - (time.monotonic() - started)))
    return sent
