"""The fetch thread: polls Kafka while the previous micro-batch is processed, and closes batches adaptively.

kafka-python's consumer belongs to one thread, so this thread makes every call
on it: polls, the seeks of a rebalance, and the group-offset commits the
processing thread asks for. It hands over one batch at a time through a queue
of one: while the processing thread is busy, the next batch keeps growing (up
to ``speed.max_batch_records``); when it is idle, a batch closes as soon as a
poll finds nothing more, so light traffic gets small, fresh batches and heavy
traffic large ones, without a timer to tune.

A rebalance runs under :attr:`Fetcher.lock`, which the processing thread holds
for the whole of a micro-batch: the partitions are re-read from the tables only
once the batch in flight is committed, and every batch fetched before the
rebalance is dropped (its :attr:`Polled.generation` is stale) rather than
committed on positions the group has since moved.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lambdaflow.validation import RawRecord
from speed_layer.continuity import raw_record

__all__ = ["Fetcher", "Polled"]

log = logging.getLogger(__name__)

#: How long one poll waits for records while a batch is open (short: the batch closes when a poll finds none).
OPEN_POLL_MS = 20
#: How long one poll waits while nothing is buffered.
IDLE_POLL_MS = 100
#: How long without progress before the consumer is made anew (a group join normally takes seconds).
RESTART_STALLED_SECONDS = 30.0


@dataclass
class Polled:
    """A batch handed from the fetch thread to the processing thread.

    Attributes:
        generation: the rebalance count when its records were fetched; a stale one is dropped.
        records: the records, in fetch order, each (topic, partition, offset) once.
        caught_up: True when every assigned partition had reached its high-water mark after the last poll.
        lag: records behind the high-water marks after the last poll.
        fetched_at: when the batch closed (monotonic seconds).
    """

    generation: int
    records: list[RawRecord] = field(default_factory=list)
    caught_up: bool = False
    lag: int = 0
    fetched_at: float = 0.0


class Fetcher(threading.Thread):
    """Owns the consumer; see the module docstring.

    Args:
        make_consumer: makes a subscribed kafka-python consumer (used by this thread only, once started).
        max_records: the largest batch.
        max_seconds: the longest a batch stays open while records keep arriving.
        on_idle: called in this thread after a poll that returned nothing while unassigned.
    """

    def __init__(self, make_consumer: Callable[[], Any], max_records: int, max_seconds: float, on_idle: Callable[[Any], None]) -> None:
        super().__init__(name="lambdaflow-fetch", daemon=True)
        self.make_consumer = make_consumer
        self.consumer = make_consumer()
        self._stalled_since: float | None = None
        self._joined = False
        self.max_records = max_records
        self.max_seconds = max_seconds
        self.on_idle = on_idle
        #: held by the processing thread for a whole micro-batch, and by a rebalance
        self.lock = threading.RLock()
        self.generation = 0
        self._handover: queue.Queue[Polled | BaseException] = queue.Queue(maxsize=1)
        self._commits: queue.SimpleQueue[dict[Any, Any]] = queue.SimpleQueue()
        self._halt = threading.Event()
        self._current = Polled(0)
        self._seen: set[tuple[str, int, int]] = set()
        self._opened = 0.0

    # ------------------------------------------------------------------ processing thread side

    def next(self, timeout: float) -> Polled | None:
        """The next batch (None when none came within ``timeout``).

        Raises:
            Exception: whatever stopped the fetch thread (an offset gap, a fenced membership).
        """
        try:
            item = self._handover.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def commit_group(self, offsets: dict[Any, Any]) -> None:
        """Ask the fetch thread to commit group offsets (monitoring only: the tables hold the positions)."""
        self._commits.put(offsets)

    def new_generation(self) -> None:
        """Called (under :attr:`lock`) by a rebalance: drop what was fetched before it."""
        self.generation += 1
        self._current = Polled(self.generation)
        self._seen.clear()
        try:
            self._handover.get_nowait()
        except queue.Empty:
            pass

    def mark_joined(self) -> None:
        """Called by the assignment callback: the group answered (an empty assignment is an answer too)."""
        self._joined = True

    def stop(self) -> None:
        self._halt.set()

    # ------------------------------------------------------------------ fetch thread

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                self._drain_commits()
                self._poll_once()
        except BaseException as exc:  # noqa: BLE001 - handed to the processing thread, which raises it
            self._put(exc)
        finally:
            self._drain_commits()

    def _poll_once(self) -> None:
        room = self.max_records - len(self._current.records)
        if room <= 0:  # full: wait for the processing thread, polling nothing more
            self._offer(block=True)
            self._stalled_since = None
            return
        wait = OPEN_POLL_MS if self._current.records else IDLE_POLL_MS
        started = time.monotonic()
        polled = self.consumer.poll(timeout_ms=wait, max_records=room)
        assigned = self.consumer.assignment()
        if not polled:
            # kafka-python 3.0 often returns an empty poll at once (seen spinning a core while idle, and while
            # the coordinator is unknown): wait out the poll's time before the next one
            self._halt.wait(max(0.0, wait / 1000 - (time.monotonic() - started)))
            if not assigned:
                self.on_idle(self.consumer)
        batch = self._current
        if not batch.records and polled:
            self._opened = time.monotonic()
        for records in polled.values():
            for r in records:
                coordinates = (r.topic, r.partition, r.offset)
                if coordinates not in self._seen:  # a rebalance seek can fetch a range again
                    self._seen.add(coordinates)
                    batch.records.append(raw_record(r))
        batch.caught_up, batch.lag = self._progress()
        quiet = not polled or time.monotonic() - self._opened >= self.max_seconds
        if batch.records and quiet or batch.caught_up:
            self._offer(block=False)
        self._watch(bool(polled) or batch.caught_up or (self._joined and not assigned))

    def _watch(self, progressing: bool) -> None:
        """Start over with a new consumer after :data:`RESTART_STALLED_SECONDS` without progress.

        Progress is records, being caught up, or an empty assignment the group gave on purpose (more
        instances than partitions). kafka-python 3.0 has been seen to spin in coordinator discovery with its
        group never joined, and to sit on an assignment without returning the records behind it: the
        suite's drains timed out on both, on both brokers. A new consumer rejoins as the same static member.
        """
        now = time.monotonic()
        if progressing:
            self._stalled_since = None
            return
        self._stalled_since = self._stalled_since or now
        if now - self._stalled_since >= RESTART_STALLED_SECONDS:
            log.warning(
                "no records and not caught up for %.0f s (%s partitions assigned): starting over with a new Kafka consumer",
                now - self._stalled_since,
                len(self.consumer.assignment()),
            )
            self.consumer.close(autocommit=False)
            self.consumer = self.make_consumer()
            self._stalled_since = None
            self._joined = False

    def _offer(self, block: bool) -> None:
        """Hand the open batch over if the processing thread has room (an empty one only says "caught up")."""
        batch = self._current
        batch.fetched_at = time.monotonic()
        while True:
            try:
                self._handover.put(batch, timeout=0.1 if block else 0)
                break
            except queue.Full:
                if not block or self._halt.is_set():
                    return
                self._drain_commits()
        self._current = Polled(self.generation)
        self._seen.clear()

    def _put(self, item: Polled | BaseException) -> None:
        while not self._halt.is_set():
            try:
                self._handover.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _drain_commits(self) -> None:
        while True:
            try:
                offsets = self._commits.get_nowait()
            except queue.Empty:
                return
            try:
                self.consumer.commit(offsets)
            except Exception as exc:  # noqa: BLE001 - group offsets are for monitoring; Delta holds the truth
                log.warning("could not commit group offsets (monitoring only): %s", exc)

    def _progress(self) -> tuple[bool, int]:
        """(caught up, lag) over the assigned partitions, from the consumer's fetch state (no request)."""
        assigned = self.consumer.assignment()
        if not assigned:
            return False, 0
        caught_up, lag = True, 0
        for tp in assigned:
            high = self.consumer.highwater(tp)
            if high is None:
                caught_up = False
                continue
            behind = max(0, high - self.consumer.position(tp))
            lag += behind
            caught_up = caught_up and behind == 0
        return caught_up, lag
