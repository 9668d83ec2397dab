"""A sample of the feature vectors the API serves, appended to ``serving/feature_log`` for the consistency check.

Requests never wait on storage: a served vector is kept in memory (when the sample draws it) and a daemon
thread appends what was kept every ``serving.feature_log_flush_seconds`` in one Delta commit. A failed append
is logged and retried with the next flush; past :data:`MAX_BUFFERED` rows the oldest are dropped and counted,
so a storage outage cannot grow the API's memory without bound.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import weakref

import pyarrow as pa

from lambdaflow.config import Settings
from lambdaflow.contracts.consistency import Source, feature_log_rows, feature_log_schema
from lambdaflow.contracts.paths import FEATURE_LOG, table_uri
from lambdaflow.tables import Table

__all__ = ["MAX_BUFFERED", "FeatureLogger"]

log = logging.getLogger(__name__)

#: Most rows held between flushes.
MAX_BUFFERED = 100_000


class FeatureLogger:
    """Logs a sample of served vectors; :meth:`flush` appends them (also called by the background thread)."""

    def __init__(self, settings: Settings, sample: float | None = None, seed: int | None = None) -> None:
        serving = settings.profile.serving
        self.settings = settings
        self.sample = serving.feature_log_sample if sample is None else sample
        self.interval = serving.feature_log_flush_seconds
        self.table = Table(table_uri(settings.profile, FEATURE_LOG))
        self.dropped = 0
        self._rows: list[pa.Table] = []
        self._held = 0
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._thread: threading.Thread | None = None

    def record(self, source: Source, events: pa.Table, features: pa.Table, as_of_seq: int) -> None:
        """Keep the vectors of ``events`` the sample draws (one draw per event)."""
        if self.sample <= 0 or events.num_rows == 0:
            return
        drawn = [i for i in range(events.num_rows) if self._random.random() < self.sample]
        if not drawn:
            return
        index = pa.array(drawn, pa.int64())
        rows = feature_log_rows(
            self.settings.pipeline, source, events.take(index), features.take(index), as_of_seq, dt.datetime.now(dt.timezone.utc)
        )
        with self._lock:
            self._rows.append(rows)
            self._held += rows.num_rows
            self._trim()
            if self._thread is None:
                self._start()

    def _trim(self) -> None:
        """Drop the oldest rows past :data:`MAX_BUFFERED` (counted in ``dropped``); the caller holds the lock."""
        while self._held > MAX_BUFFERED and len(self._rows) > 1:
            oldest = self._rows.pop(0)
            self._held -= oldest.num_rows
            self.dropped += oldest.num_rows

    def flush(self) -> int:
        """Append what is held in one commit; returns the rows written (0 when none, or on failure, kept for the next try)."""
        with self._lock:
            rows, self._rows, held = self._rows, [], self._held
            self._held = 0
        if not rows:
            return 0
        try:
            self.table.create(feature_log_schema(self.settings.pipeline), name="feature_log")
            self.table.append(pa.concat_tables(rows), operation="feature-log")
        except Exception as exc:  # noqa: BLE001 - storage may be down; serving goes on and the rows wait
            log.warning("feature log not appended, kept for the next flush: %s", exc)
            with self._lock:
                self._rows[:0] = rows
                self._held += held
                self._trim()
            return 0
        return held

    def _start(self) -> None:
        """Start the flushing thread (the caller holds the lock, so only one ever starts)."""
        ref = weakref.ref(self)
        interval = self.interval

        def loop() -> None:
            while True:
                threading.Event().wait(interval)
                logger = ref()
                if logger is None:
                    return
                logger.flush()
                del logger

        self._thread = threading.Thread(target=loop, name="lambdaflow-feature-log", daemon=True)
        self._thread.start()
