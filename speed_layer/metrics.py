"""Prometheus metrics of the speed layer, served as text on ``speed.metrics_port`` (0 disables the endpoint)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from lambdaflow.validation import RawRecord
from speed_layer.microbatch import BatchResult

#: Buckets of the end-to-end histogram (seconds): fine below the 1 s target, coarse above it.
END_TO_END_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


class SpeedMetrics:
    """Counters and gauges updated after every micro-batch."""

    def __init__(self, port: int = 0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter("lambdaflow_speed_consumed_records", "Kafka records consumed", registry=r)
        self.appended = Counter("lambdaflow_speed_appended_events", "valid events appended to master/events", registry=r)
        self.quarantined = Counter("lambdaflow_speed_quarantined_records", "records sent to quarantine", registry=r)
        self.duplicates = Counter(
            "lambdaflow_speed_duplicate_events",
            "repeated deliveries of an ingested event (kept in master/events, not counted again)",
            registry=r,
        )
        self.labels = Counter("lambdaflow_speed_labels", "labels appended to master/labels", registry=r)
        self.scored = Counter("lambdaflow_speed_scored_events", "events scored by a model", registry=r)
        self.batch_seconds = Histogram(
            "lambdaflow_speed_batch_seconds",
            "processing time of a micro-batch",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )
        self.lag = Gauge("lambdaflow_speed_consumer_lag", "records behind the high-water marks", registry=r)
        self.seq = Gauge("lambdaflow_speed_last_batch", "sequence number of the last committed micro-batch", registry=r)
        self.model_version = Gauge("lambdaflow_speed_model_version", "champion version in use (-1: none)", registry=r)
        self.freshness = Gauge("lambdaflow_speed_freshness_seconds", "now minus the newest event time ingested", registry=r)
        self.end_to_end = Histogram(
            "lambdaflow_speed_end_to_end_seconds",
            "per record: from its Kafka timestamp (the producer's send) to its micro-batch being committed in every "
            "speed table (visible in the unified views and predictions)",
            registry=r,
            buckets=END_TO_END_BUCKETS,
        )
        self._server = None
        if port:
            self._server, _ = start_http_server(port, addr="127.0.0.1", registry=r)

    def observe(self, result: BatchResult, lag: int, records: Sequence[RawRecord] = ()) -> None:
        """Count a committed micro-batch; ``records`` (its Kafka records) feed the end-to-end histogram."""
        now_ms = time.time() * 1000
        for r in records:
            if r.timestamp_ms is not None and r.timestamp_ms > 0:
                self.end_to_end.observe(max(0.0, now_ms - r.timestamp_ms) / 1000)
        self.consumed.inc(result.records)
        self.appended.inc(result.appended)
        self.quarantined.inc(result.quarantined)
        self.duplicates.inc(result.duplicates)
        self.labels.inc(result.labels)
        self.scored.inc(result.scored)
        self.batch_seconds.observe(result.seconds)
        self.lag.set(lag)
        self.seq.set(result.seq)
        self.model_version.set(-1 if result.model_version is None else result.model_version)
        if result.max_event_time is not None:
            self.freshness.set((dt.datetime.now(dt.timezone.utc) - result.max_event_time).total_seconds())

    def text(self) -> str:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry).decode()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
