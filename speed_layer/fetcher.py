"""The processing side of the fetch process (:mod:`speed_layer.fetch_worker`): batches in, rebalances answered.

The processing loop reads from the fetch process only between micro-batches, so a rebalance (which the
fetch process reports and then waits on) is answered once the batch in flight is committed: the
partitions are re-read from the tables with nothing in flight, and every batch fetched before the
rebalance carries a stale :attr:`Polled.generation` and is dropped rather than committed on positions
the group has since moved.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Literal

from lambdaflow.errors import ServiceError
from lambdaflow.validation import RawRecord
from speed_layer.fetch_worker import FetchSpec

__all__ = ["FetchSpec", "Fetcher", "Polled"]

log = logging.getLogger(__name__)

#: Where ``speed_layer`` lives: the fetch process must import it whatever the caller's working directory.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
#: How long a stopped fetch process gets to close its consumer before it is killed.
STOP_SECONDS = 10.0


@dataclass
class Polled:
    """A batch handed over by the fetch process.

    Attributes:
        generation: the rebalance count when its records were fetched; a stale one is dropped.
        records: the records, in fetch order, each (topic, partition, offset) once.
        caught_up: True when every assigned partition had reached its high-water mark after the last poll.
        lag: records behind the high-water marks after the last poll.
    """

    generation: int
    records: list[RawRecord] = field(default_factory=list)
    caught_up: bool = False
    lag: int = 0


class Fetcher:
    """Starts and talks to the fetch process; see the module docstring.

    Args:
        spec: the consumer and batch settings.
        on_revoked: called (between micro-batches) when the group takes the partitions away.
        on_assigned: called (between micro-batches) with the assigned (topic, partition) pairs; returns
            the offset each is to be read from (None: from the beginning of the log).
    """

    def __init__(
        self,
        spec: FetchSpec,
        on_revoked: Callable[[], None],
        on_assigned: Callable[[list[tuple[str, int]]], dict[tuple[str, int], int | None]],
    ) -> None:
        self.spec = spec
        self.on_revoked = on_revoked
        self.on_assigned = on_assigned
        self.generation = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._control: Connection | None = None
        #: the credit the fetch process has not answered with a batch yet: asked ahead, or waited for
        self._asked: Literal["ahead", "waiting"] | None = None

    def start(self) -> None:
        """Start the fetch process (it fetches at once; the first :meth:`next` asks for a batch)."""
        data, their_data = socket.socketpair()
        control, their_control = socket.socketpair()
        fds = (their_data.fileno(), their_control.fileno())
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "speed_layer.fetch_worker", *map(str, fds), str(os.getpid())],
            pass_fds=fds,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        their_data.close()
        their_control.close()
        self._conn = Connection(data.detach())
        self._control = Connection(control.detach())
        self._conn.send(self.spec)

    def next(self, timeout: float) -> Polled | None:
        """The next batch (None when none came within ``timeout``), answering rebalances first.

        Raises:
            Exception: whatever stopped the fetch process (an offset gap, a fenced membership).
            ServiceError: the fetch process died.
        """
        conn, control = self._connection(), self._control
        assert control is not None
        self._ask(conn, "waiting")
        deadline = time.monotonic() + timeout
        while True:
            try:
                ready = wait([control, conn], max(0.0, deadline - time.monotonic()))
                if not ready:
                    return None
                if control in ready:  # between micro-batches: nothing in flight
                    self._answer(control, control.recv())
                    continue
                message = conn.recv()
            except (EOFError, OSError) as exc:
                reason = self._last_error(conn)  # the control socket may show the end before the data socket's last word
                if reason is not None:
                    raise _as_raised(reason) from None
                raise ServiceError(f"the speed layer's fetch process exited (code {self._exit_code()})") from exc
            if message[0] == "batch":
                _, generation, columns, caught_up, lag = message
                self._asked = None
                if len(columns[0]) >= self.spec.max_records // 2:
                    self._ask(conn, "ahead")  # under load: the next batch fills while this one is processed
                return Polled(generation, list(map(RawRecord, *columns)), caught_up, lag)
            if message[0] == "error":
                raise _as_raised(message[1])

    def _ask(self, conn: Connection, how: Literal["ahead", "waiting"]) -> None:
        """Give the fetch process a credit, or say that the one it holds is now waited for.

        A batch asked for while the processing side waits is handed over after the next poll that finds
        anything: it holds what arrived while the last batch was processed, so batches grow with the load
        and no record waits behind a batch closed ahead of time (at 5,000 events/s that wait was a whole
        micro-batch: p50 1.15 s, p99 1.80 s). A batch at least half full means load, where throughput
        counts: the next credit goes out with it, "ahead", and that batch fills until it is full or a poll
        finds nothing more.
        """
        message: tuple[Any, ...]
        if self._asked is None:
            message = ("credit", how == "waiting")
        elif self._asked == "ahead" and how == "waiting":
            message = ("waiting",)
        else:
            return
        try:
            conn.send(message)
        except OSError:  # the fetch process is gone: the read that follows finds its last word (an error) or its exit
            return
        self._asked = how

    @staticmethod
    def _last_error(conn: Connection) -> BaseException | None:
        """The error the fetch process sent before it exited, if any is still unread."""
        try:
            while conn.poll(0):
                message = conn.recv()
                if message[0] == "error":
                    return message[1]
        except (EOFError, OSError):
            pass
        return None

    def _answer(self, control: Connection, request: tuple[Any, ...]) -> None:
        self.generation += 1  # every batch fetched before this answer is now stale
        if request[0] == "revoked":
            self.on_revoked()
            control.send(("ack", self.generation))
        else:
            positions = self.on_assigned([(t, p) for t, p in request[1]])
            control.send(("positions", self.generation, positions))

    def reseek(self, positions: dict[tuple[str, int], int]) -> None:
        """Have the fetch process read every assigned partition again from ``positions`` (from the start of
        the log where they name none); what it fetched before is now stale."""
        self.generation += 1
        self._connection().send(("seek", self.generation, positions))

    def commit_group(self, offsets: dict[tuple[str, int], int]) -> None:
        """Ask the fetch process to commit group offsets (monitoring only: the tables hold the positions)."""
        try:
            self._connection().send(("commit", offsets))
        except OSError:  # the fetch process is gone; the next read says so
            pass

    def close(self) -> None:
        """Stop the fetch process (it closes its consumer), killing it if it does not exit in time."""
        if self._conn is not None:
            try:
                self._conn.send(("stop",))
            except OSError:
                pass
        if self._proc is not None:
            deadline = time.monotonic() + STOP_SECONDS
            # read on while it stops: a batch it was handing over (and will not be processed) must not block it
            while self._conn is not None and self._proc.poll() is None and time.monotonic() < deadline:
                try:
                    if self._conn.poll(0.1):
                        self._conn.recv()
                except (EOFError, OSError):
                    break
            try:
                self._proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("the fetch process did not stop within %.0f s: killed", STOP_SECONDS)
                self._proc.kill()
                self._proc.wait()
        for conn in (self._conn, self._control):
            if conn is not None:
                conn.close()

    def _connection(self) -> Connection:
        if self._conn is None:
            raise ServiceError("the fetch process was not started")
        return self._conn

    def _exit_code(self) -> int | None:
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None


def _as_raised(exc: BaseException) -> BaseException:
    """A Kafka error as it is (the runner tells them apart), anything else as a ServiceError saying where."""
    from kafka.errors import KafkaError

    if isinstance(exc, KafkaError):
        return exc
    error = ServiceError(f"the speed layer's fetch process failed: {exc}")
    error.__cause__ = exc
    return error
