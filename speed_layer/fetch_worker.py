"""The fetch process: owns the speed layer's Kafka consumer, polls while the previous micro-batch is processed.

Run as ``python -m speed_layer.fetch_worker FD`` by :class:`speed_layer.fetcher.Fetcher`, talking over the
socket FD. A process, not a thread: kafka-python decodes every record in Python, and a fetch thread took the
interpreter lock from the processing thread for as long as the processing itself took (a bare consumer read
11.4k records/s, the layer 5.0k/s). It imports kafka-python and the standard library only, so it starts in
a fraction of a second.

The batches close adaptively: a batch is handed over when the processing side has asked for one (a credit)
and a poll found nothing more (light traffic: small, fresh batches), or when it is full or has been open
``max_seconds`` (heavy traffic: large ones). At most one batch waits beyond the one in processing.

Messages (pickled tuples), to the processing side:
    ``("batch", generation, columns, caught_up, lag, closed_at)``, ``("revoked",)``,
    ``("assigned", [(topic, partition), ...])``, ``("error", exception)``;
from it: ``("credit",)``, ``("commit", {(topic, partition): offset})``, ``("ack", generation)``,
``("positions", generation, {(topic, partition): offset or None})``, ``("stop",)``.

A rebalance asks the processing side and waits for its answer: "revoked" is answered once the batch in
processing is committed, "assigned" with the positions recorded in the tables (never the group's offsets).
Every batch carries the rebalance generation it was fetched in; the processing side drops a stale one.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

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
#: How long a topic may show no partitions in the consumer's metadata before the layer gives up.
METADATA_WAIT_SECONDS = 30.0
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


class Stopped(BaseException):
    """The processing side said stop while a rebalance waited for its answer (a BaseException: kafka-python
    swallows the Exceptions a rebalance listener raises)."""


class Worker:
    """The fetch loop; see the module docstring."""

    def __init__(self, conn: Connection, spec: FetchSpec) -> None:
        self.conn = conn
        self.spec = spec
        self.generation = 0
        self.credits = 0
        self.halt = False
        self.joined = False
        self.pending_commits: list[dict[Any, Any]] = []
        self.batch = _Open(0)
        self.stalled_since: float | None = None
        self.unassigned_since: float | None = None
        self.consumer = self._make_consumer()

    def _make_consumer(self) -> Any:
        from kafka import KafkaConsumer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        strategies = tuple(_load(name) for name in self.spec.assignors)
        consumer = KafkaConsumer(**self.spec.consumer, partition_assignment_strategy=strategies)
        worker = self

        class AskTheTables(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                worker._rebalanced(worker._ask(("revoked",), "ack")[1])

            def on_partitions_assigned(self, assigned: Any) -> None:
                _, generation, positions = worker._ask(("assigned", [(tp.topic, tp.partition) for tp in assigned]), "positions")
                for tp in assigned:
                    offset = positions.get((tp.topic, tp.partition))
                    if offset is None:
                        consumer.seek_to_beginning(tp)
                    else:
                        consumer.seek(tp, offset)
                worker._rebalanced(generation)
                worker.joined = True
                log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

        for topic in self.spec.topics:
            _wait_for_partitions(consumer, topic)
        consumer.subscribe(list(self.spec.topics), listener=AskTheTables())
        return consumer

    # ------------------------------------------------------------------ talking to the processing side

    def _ask(self, message: tuple[Any, ...], answer: str) -> tuple[Any, ...]:
        """Send a rebalance request and wait for its answer, keeping what else arrives meanwhile.

        Raises:
            Stopped: the processing side said stop instead (it will not answer).
        """
        self.conn.send(message)
        while True:
            reply = self.conn.recv()
            if reply[0] == answer:
                return tuple(reply)
            self._handle(reply)
            if self.halt:
                raise Stopped

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "credit":
            self.credits += 1
        elif kind == "commit":
            self.pending_commits.append(message[1])  # never from inside a rebalance callback: done by the loop
        elif kind == "stop":
            self.halt = True

    def _read_control(self, wait: float = 0.0) -> None:
        if self.conn.poll(wait):
            while self.conn.poll(0):
                self._handle(self.conn.recv())

    def _rebalanced(self, generation: int) -> None:
        self.generation = generation
        self.batch = _Open(generation)

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        try:
            while not self.halt:
                self._read_control()
                self._commit_group()
                self._poll_once()
        finally:
            self._commit_group()
            self.consumer.close(autocommit=False)

    def _poll_once(self) -> None:
        batch = self.batch
        room = self.spec.max_records - len(batch)
        if room <= 0:  # full: wait for a credit, polling nothing more
            self._read_control(wait=0.1)
            self._offer()
            self.stalled_since = None
            return
        wait = OPEN_POLL_MS if len(batch) else IDLE_POLL_MS
        started = time.monotonic()
        polled = self.consumer.poll(timeout_ms=wait, max_records=room)
        assigned = self.consumer.assignment()
        if not polled:
            # kafka-python 3.0 often returns an empty poll at once (seen spinning a core while idle): wait it out
            self._read_control(wait=max(0.0, wait / 1000 - (time.monotonic() - started)))
            self._warn_if_unassigned(assigned)
        batch = self.batch  # a rebalance inside poll() starts a new one
        if not len(batch) and polled:
            batch.opened = time.monotonic()
        topics, partitions, offsets, keys, values, stamps = batch.columns
        for records in polled.values():
            for r in records:
                coordinates = (r.topic, r.partition, r.offset)
                if coordinates not in batch.seen:  # a rebalance seek can fetch a range again
                    batch.seen.add(coordinates)
                    topics.append(r.topic)
                    partitions.append(r.partition)
                    offsets.append(r.offset)
                    keys.append(r.key)
                    values.append(r.value)
                    stamps.append(r.timestamp)
        caught_up, lag = self._progress()
        quiet = not polled or time.monotonic() - batch.opened >= self.spec.max_seconds
        if (len(batch) and quiet) or caught_up:
            self._offer(caught_up, lag)
        self._watch(bool(polled) or caught_up or (self.joined and not assigned))

    def _offer(self, caught_up: bool = False, lag: int = 0) -> None:
        """Hand the open batch over if the processing side asked for one (an empty one only says "caught up")."""
        if self.credits <= 0:
            return
        self.credits -= 1
        batch = self.batch
        self.conn.send(("batch", batch.generation, batch.columns, caught_up, lag, time.monotonic()))
        self.batch = _Open(self.generation)

    def _commit_group(self) -> None:
        from kafka import OffsetAndMetadata, TopicPartition

        while self.pending_commits:
            offsets = self.pending_commits.pop(0)
            try:
                self.consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})
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
            self.consumer.close(autocommit=False)
            self.joined = False
            self.consumer = self._make_consumer()
            self.stalled_since = None


def _wait_for_partitions(consumer: Any, topic: str, seconds: float = METADATA_WAIT_SECONDS) -> None:
    """Block until the consumer's metadata lists the topic's partitions.

    A group leader whose metadata lacks them (a topic created a moment ago) assigns nothing, and kafka-python
    3.0 does not rejoin when they appear: the member sat with no partitions until the drain timed out
    ("No partition metadata for topic …", then "assigned []": the suite's stuck first joins).
    """
    deadline = time.monotonic() + seconds
    while not consumer.partitions_for_topic(topic):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kafka lists no partitions for topic {topic!r} after {seconds:.0f} s")
        time.sleep(0.1)


def _load(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


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
    """Serve one processing process over the inherited socket ``argv[0]``; ``argv[1]`` is its pid."""
    sock = socket.socket(fileno=int(argv[0]))
    _die_with_parent(int(argv[1]))
    # the processing side decides when to stop (after its batch in flight); a Ctrl-C to the group must not cut in
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(sock.detach())
    spec: FetchSpec = conn.recv()
    configure_logging(spec.log_level)
    try:
        worker = Worker(conn, spec)
        worker.run()
    except Stopped:
        return 0
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return 1  # the processing side is gone
    except BaseException as exc:  # noqa: BLE001 - handed to the processing side, which raises it
        try:
            conn.send(("error", _sendable(exc)))
        except OSError:
            return 1
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
