"""The fetch process: owns the speed layer's Kafka consumer, polls while the previous micro-batch is processed.

Run as ``python -m speed_layer.fetch_worker DATA_FD CONTROL_FD PARENT_PID`` by
:class:`speed_layer.fetcher.Fetcher`. A process, not a thread: kafka-python decodes every record in Python, and a fetch thread took the
interpreter lock from the processing thread for as long as the processing itself took (a bare consumer read
11.4k records/s, the layer 5.0k/s). It imports kafka-python and the standard library only, so it starts in
a fraction of a second.

The batches close adaptively, once the processing side has asked for one (a credit). Asked for while it
waits, a batch is handed over after the next poll that finds anything: it holds what arrived while the
last batch was processed, so batches are small and fresh under light traffic and grow with the load.
After a batch at least half full the processing side asks ahead; that batch is handed over when it is
full, when a poll finds nothing more, or after ``max_seconds``, unless the processing side says it now waits.

Two sockets. ``data``: batches to the processing side (``("batch", generation, columns, caught_up, lag)``, ``("error", exception)``), and ``("credit", waited_for)``, ``("waiting",)``, ``("commit", {(topic, partition): offset})``,
``("stop",)``, ``("seek", generation, {(topic, partition): offset})`` from it. ``control``: rebalance requests ``("revoked",)`` and ``("assigned", [(topic,
partition), ...])``, answered ``("ack", generation)`` and ``("positions", generation, {(topic, partition):
offset or None})``.

A rebalance asks the processing side and waits for its answer: "revoked" is answered once the batch in
processing is committed, "assigned" with the positions recorded in the tables (never the group's offsets).
The answer carries a new generation; the open batch is dropped, and the processing side drops any batch of
an older generation.

Threads: kafka-python 3.0 runs rebalance listeners on its IO thread, which also sends the heartbeats, and
a ``poll()`` on the main thread waits for a join in progress, listener included. So the listener has the
control socket to itself and waits for its answer by yielding to kafka-python's event loop (heartbeats go
on), and the main thread notices a new generation after each poll and re-reads the answered positions.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from speed_layer.consumer import commit_failed, load, seek, wait_for_partitions
from speed_layer.logs import configure_logging

__all__ = ["FetchSpec", "main"]

log = logging.getLogger("lambdaflow.speed.fetch")

#: How long one poll waits for records while a batch is open (short: the batch closes when a poll finds none).
OPEN_POLL_MS = 20
#: How long one poll waits while nothing is buffered.
IDLE_POLL_MS = 100
#: How long without progress before the consumer is made anew (a group join normally takes seconds).
RESTART_STALLED_SECONDS = 30.0
#: How long without an assignment before the layer says so (and again after each such period).
UNASSIGNED_WARNING_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class FetchSpec:
    """What the fetch process needs (picklable: assignors are named, not passed).

    Attributes:
        consumer: keyword arguments of ``KafkaConsumer``.
        assignors: dotted names of the partition assignors, in preference order.
        topics: the topics to subscribe to.
        max_records: the largest batch.
        max_seconds: the longest a batch stays open while records keep arriving.
        log_level: the processing process's log level.
    """

    consumer: dict[str, Any]
    assignors: tuple[str, ...]
    topics: tuple[str, ...]
    max_records: int
    max_seconds: float
    log_level: int = logging.INFO


@dataclass
class _Open:
    """The batch being filled: columns of the records, each (topic, partition, offset) once."""

    generation: int
    columns: tuple[list[Any], ...] = field(default_factory=lambda: ([], [], [], [], [], []))
    seen: set[tuple[str, int, int]] = field(default_factory=set)
    opened: float = 0.0

    def __len__(self) -> int:
        return len(self.columns[0])


class Worker:
    """The fetch loop; see the module docstring."""

    def __init__(self, data: Connection, control: Connection, spec: FetchSpec) -> None:
        self.data = data
        self.control = control
        self.spec = spec
        #: set by the listener (IO thread) with each answer; the main thread compares it after every poll
        self.generation = 0
        #: where the last "assigned" answer put each partition (the main thread seeks there again)
        self.seek_to: dict[tuple[str, int], int | None] = {}
        self.credits = 0
        #: the processing side waits for the batch asked for: hand it over after the next poll finding anything
        self.waited_for = False
        self.halt = False
        self.joined = False
        #: set while the consumer closes: its last revocation needs no answer (nobody may be left to give it)
        self.closing = False
        #: group offsets to commit (monitoring only), newest per partition
        self.pending_commits: dict[tuple[str, int], int] = {}
        self.batch = _Open(0)
        self.stalled_since: float | None = None
        self.unassigned_since: float | None = None
        self.consumer = self._make_consumer()

    def _make_consumer(self) -> Any:
        from kafka import KafkaConsumer
        from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

        strategies = tuple(load(name) for name in self.spec.assignors)
        consumer = KafkaConsumer(**self.spec.consumer, partition_assignment_strategy=strategies)
        worker = self

        class AskTheTables(AsyncConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                reply = await worker._ask(consumer, ("revoked",))
                if reply is not None:
                    worker.seek_to = {}
                    worker.generation = reply[1]

            async def on_partitions_assigned(self, assigned: Any) -> None:
                reply = await worker._ask(consumer, ("assigned", [(tp.topic, tp.partition) for tp in assigned]))
                if reply is None:
                    return
                worker.seek_to = dict(reply[2])
                seek(consumer, assigned, worker.seek_to)
                worker.generation = reply[1]
                worker.joined = True
                log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

        for topic in self.spec.topics:
            wait_for_partitions(consumer, topic)
        consumer.subscribe(list(self.spec.topics), listener=AskTheTables())
        return consumer

    def _close_consumer(self) -> None:
        self.closing = True
        try:
            self.consumer.close(autocommit=False)
        finally:
            self.closing = False

    # ------------------------------------------------------------------ talking to the processing side

    async def _ask(self, consumer: Any, message: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """(IO thread) A rebalance request's answer, waited for without blocking the heartbeats.

        None when the consumer is closing or the processing side said stop (it will not answer).
        """
        if self.closing or self.halt:
            return None
        self.control.send(message)  # a few bytes on a socket nothing else writes to: never blocks
        while not self.control.poll(0):
            if self.halt or self.closing:
                return None
            # kafka-python's own event loop: awaiting it keeps the heartbeat coroutine running
            await consumer._net.sleep(0.02)
        return tuple(self.control.recv())

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "credit":
            self.credits += 1
            self.waited_for = message[1]
        elif kind == "waiting":
            self.waited_for = True
        elif kind == "commit":
            self.pending_commits.update(message[1])  # cumulative: the newest offset per partition is enough
        elif kind == "stop":
            self.halt = True
        elif kind == "seek":  # the processing side re-read the tables: every assigned partition from there
            _, generation, positions = message
            self.seek_to = {(tp.topic, tp.partition): positions.get((tp.topic, tp.partition)) for tp in self.consumer.assignment()}
            self.generation = generation

    def _read_data(self, wait: float = 0.0) -> None:
        if self.data.poll(wait):
            while self.data.poll(0):
                self._handle(self.data.recv())

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        try:
            while not self.halt:
                self._read_data()
                self._commit_group()
                self._poll_once()
        finally:
            self._close_consumer()

    def _restart_if_rebalanced(self, generation: int) -> bool:
        """After a rebalance answered during the last poll: drop what was fetched, read from the answer again."""
        if generation == self.generation == self.batch.generation:
            return False
        self.batch = _Open(self.generation)
        seek(self.consumer, self.consumer.assignment(), self.seek_to)
        return True

    def _poll_once(self) -> None:
        batch = self.batch
        room = self.spec.max_records - len(batch)
        if room <= 0:  # full: wait for a credit, polling nothing more
            self._read_data(wait=0.1)
            if not self._restart_if_rebalanced(self.generation):
                self._offer(*self._progress())
            self.stalled_since = None
            return
        wait = OPEN_POLL_MS if len(batch) else IDLE_POLL_MS
        started = time.monotonic()
        generation = self.generation
        polled = self.consumer.poll(timeout_ms=wait, max_records=room)
        if self._restart_if_rebalanced(generation):
            return
        assigned = self.consumer.assignment()
        if not polled:
            # kafka-python 3.0 often returns an empty poll at once (seen spinning a core while idle): wait it out
            self._read_data(wait=max(0.0, wait / 1000 - (time.monotonic() - started)))
            self._warn_if_unassigned(assigned)
        if not len(batch) and polled:
            batch.opened = time.monotonic()
        topics, partitions, offsets, keys, values, stamps = batch.columns
        for records in polled.values():
            for r in records:
                coordinates = (r.topic, r.partition, r.offset)
                if coordinates not in batch.seen:  # a seek can fetch a range again
                    batch.seen.add(coordinates)
                    topics.append(r.topic)
                    partitions.append(r.partition)
                    offsets.append(r.offset)
                    keys.append(r.key)
                    values.append(r.value)
                    stamps.append(r.timestamp)
        caught_up, lag = self._progress()
        quiet = not polled or time.monotonic() - batch.opened >= self.spec.max_seconds
        if (len(batch) and (quiet or self.waited_for)) or caught_up:
            self._offer(caught_up, lag)
        self._watch(bool(polled) or caught_up or (self.joined and not assigned))

    def _offer(self, caught_up: bool = False, lag: int = 0) -> None:
        """Hand the open batch over if the processing side asked for one (an empty one only says "caught up")."""
        if self.credits <= 0:
            return
        self.credits -= 1
        self.waited_for = False
        batch = self.batch
        self.data.send(("batch", batch.generation, batch.columns, caught_up, lag))
        self.batch = _Open(batch.generation)

    def _commit_group(self) -> None:
        """Commit the newest group offsets without waiting (they are for lag monitoring; Delta holds the truth)."""
        from kafka import OffsetAndMetadata, TopicPartition

        if not self.pending_commits:
            return
        offsets = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in self.pending_commits.items()}
        self.pending_commits = {}
        try:
            self.consumer.commit_async(offsets, callback=commit_failed)
        except Exception as exc:  # noqa: BLE001 - monitoring only
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

    def _warn_if_unassigned(self, assigned: Any) -> None:
        now = time.monotonic()
        if assigned:
            self.unassigned_since = None
            return
        since = self.unassigned_since = self.unassigned_since or now
        if now - since >= UNASSIGNED_WARNING_SECONDS:
            self.unassigned_since = now
            log.warning(
                "no partitions assigned for %.0f s (subscribed to %s); the group may be rebalancing", now - since, list(self.spec.topics)
            )

    def _watch(self, progressing: bool) -> None:
        """Start over with a new consumer after :data:`RESTART_STALLED_SECONDS` without progress.

        Progress is records, being caught up, or an empty assignment the group gave on purpose (more
        instances than partitions). kafka-python 3.0 has been seen to spin in coordinator discovery with its
        group never joined, and to sit on an assignment without returning the records behind it. A new
        consumer rejoins as the same static member.
        """
        now = time.monotonic()
        if progressing:
            self.stalled_since = None
            return
        self.stalled_since = self.stalled_since or now
        if now - self.stalled_since >= RESTART_STALLED_SECONDS:
            log.warning(
                "no records and not caught up for %.0f s (%s partitions assigned): starting over with a new Kafka consumer",
                now - self.stalled_since,
                len(self.consumer.assignment()),
            )
            self._close_consumer()
            self.joined = False
            self.consumer = self._make_consumer()
            self.stalled_since = None


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when the processing process dies (a SIGKILL gives it no chance to ask)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the closed socket ends the loop instead
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _sendable(exc: BaseException) -> BaseException:
    """The exception if it survives pickling (kafka-python's do), else a RuntimeError that says what it was."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - whatever cannot travel is described instead
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def main(argv: list[str]) -> int:
    """Serve one processing process over the inherited sockets ``argv[0]`` (data) and ``argv[1]`` (control);
    ``argv[2]`` is its pid."""
    data = Connection(socket.socket(fileno=int(argv[0])).detach())
    control = Connection(socket.socket(fileno=int(argv[1])).detach())
    _die_with_parent(int(argv[2]))
    # the processing side decides when to stop (after its batch in flight); a Ctrl-C to the group must not cut in
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    spec: FetchSpec = data.recv()
    configure_logging(spec.log_level)
    try:
        Worker(data, control, spec).run()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return 1  # the processing side is gone
    except BaseException as exc:  # noqa: BLE001 - handed to the processing side, which raises it
        try:
            data.send(("error", _sendable(exc)))
        except OSError:
            return 1
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
