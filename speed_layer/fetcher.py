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
from multiprocessing.connection import Connection
from pathlib import Path

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
        fetched_at: when the batch closed (monotonic seconds, the same clock in both processes).
    """

    generation: int
    records: list[RawRecord] = field(default_factory=list)
    caught_up: bool = False
    lag: int = 0
    fetched_at: float = 0.0


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

    def start(self) -> None:
        """Start the fetch process and give it the first credit."""
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "speed_layer.fetch_worker", str(theirs.fileno()), str(os.getpid())],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send(self.spec)
        self._conn.send(("credit",))

    def next(self, timeout: float) -> Polled | None:
        """The next batch (None when none came within ``timeout``), answering rebalances on the way.

        Raises:
            Exception: whatever stopped the fetch process (an offset gap, a fenced membership).
            ServiceError: the fetch process died.
        """
        conn = self._connection()
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not conn.poll(max(0.0, deadline - time.monotonic())):
                    return None
                message = conn.recv()
            except (EOFError, OSError) as exc:
                raise ServiceError(f"the speed layer's fetch process exited (code {self._exit_code()})") from exc
            kind = message[0]
            if kind == "batch":
                conn.send(("credit",))
                _, generation, columns, caught_up, lag, closed_at = message
                return Polled(generation, list(map(RawRecord, *columns)), caught_up, lag, closed_at)
            if kind == "revoked":
                self.generation += 1
                self.on_revoked()
                conn.send(("ack", self.generation))
            elif kind == "assigned":
                self.generation += 1
                positions = self.on_assigned([(t, p) for t, p in message[1]])
                conn.send(("positions", self.generation, positions))
            elif kind == "error":
                raise _as_raised(message[1])

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
        if self._conn is not None:
            self._conn.close()

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
