"""Speed-layer health: consumer lag, staleness of the newest ingest, quarantine rate — checked against the profile."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

import pyarrow.compute as pc

from lambdaflow import services
from lambdaflow.config import Settings
from lambdaflow.contracts.commits import writer_ids
from lambdaflow.contracts.speed import SpeedTables, writer_marks
from lambdaflow.errors import UnhealthyError
from lambdaflow.schemas import INGEST_SEQ, INGESTED_AT

__all__ = ["Health", "UnhealthyError", "assert_healthy", "check", "consumer_lag"]


@dataclass
class Health:
    lag_records: int | None
    staleness_seconds: float | None
    quarantine_rate: float
    last_batch: int
    problems: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def consumer_lag(settings: Settings) -> int | None:
    """Records between the group's committed offsets and the high-water marks (None if unknown)."""
    from kafka import KafkaConsumer, TopicPartition

    pipeline = settings.pipeline
    topics = [t for t in (pipeline.source.topic, pipeline.labels.topic if pipeline.labels else None) if t]
    consumer = KafkaConsumer(
        **services.client_config(settings.profile),
        group_id=settings.profile.speed.consumer_group,
        enable_auto_commit=False,
    )
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
        if not tps:
            return None
        ends = consumer.end_offsets(tps)  # may under-report on Tansu (docs/architecture.md §8): lag is then a lower bound
        lag = 0
        for tp in tps:
            committed = consumer.committed(tp) or 0
            lag += max(0, ends.get(tp, 0) - committed)
        return lag
    finally:
        consumer.close()


def check(settings: Settings, recent_batches: int = 50) -> Health:
    """Measure and compare with ``profile.health``; problems are listed, not raised."""
    limits = settings.profile.health
    tables = SpeedTables(settings)
    master = tables.master.snapshot()
    last = max(writer_marks(master, writer_ids(settings)))
    newest = pc.max(master.to_arrow(columns=[INGESTED_AT]).column(INGESTED_AT)).as_py() if master.num_records else None
    staleness = (dt.datetime.now(dt.timezone.utc) - newest).total_seconds() if newest else None
    since = max(0, last - recent_batches)
    recent = master.to_arrow(columns=[INGEST_SEQ], filter=pc.field(INGEST_SEQ) > since).num_rows
    bad = tables.quarantine.snapshot().to_arrow(columns=[INGEST_SEQ], filter=pc.field(INGEST_SEQ) > since).num_rows
    rate = bad / (recent + bad) if recent + bad else 0.0
    try:
        lag = consumer_lag(settings)
    except Exception:  # noqa: BLE001 - an unreachable broker is itself a finding
        lag = None
    problems = []
    if lag is None:
        problems.append("consumer lag unknown: the broker or the topics cannot be reached")
    elif lag > limits.max_lag_records:
        problems.append(f"consumer lag {lag:,} records > health.max_lag_records {limits.max_lag_records:,}")
    if staleness is not None and staleness > limits.max_staleness:
        problems.append(f"newest ingest {staleness:.0f}s ago > health.max_staleness {limits.max_staleness}s")
    if rate > limits.max_quarantine_rate:
        problems.append(
            f"quarantine rate {rate:.2%} over the last {recent_batches} batches > health.max_quarantine_rate {limits.max_quarantine_rate:.2%}"
        )
    return Health(lag, staleness, rate, last, problems)


def assert_healthy(settings: Settings) -> Health:
    """:func:`check`, raising :class:`UnhealthyError` when a threshold is crossed."""
    health = check(settings)
    if health.problems:
        raise UnhealthyError("; ".join(health.problems))
    return health
