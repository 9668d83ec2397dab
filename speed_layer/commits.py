"""A micro-batch's commits after its master commit, made side by side.

Once ``master/events`` holds a batch (the commit point), its other tables are independent of each other:
every commit carries the Delta ``txn`` action (app id, sequence), and recovery completes whichever tables
are behind, in any order (:meth:`speed_layer.microbatch.SpeedPipeline.recover`). So they go to a small
pool of threads. Parquet writing and delta-rs release the interpreter lock, so the commits' file writes
and log replays overlap each other and the features and scores computed meanwhile: one at a time, the
six commits of a small batch took most of its ~400 ms. A batch ends only when all of its commits have
settled, so the next batch never overtakes one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

from lambdaflow.errors import ConcurrentCommitError
from lambdaflow.faults import crash_point
from lambdaflow.tables import CommitResult, Table

__all__ = ["COMMIT_THREADS", "SideCommits"]

log = logging.getLogger(__name__)

#: Commits in flight at once: a batch has up to ~6 after its master commit (quarantine, labels, a table
#: per view, predictions); more threads than cores still helps while they wait on storage.
COMMIT_THREADS = 4

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """One pool per process, shared by every pipeline in it (tests build many)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(COMMIT_THREADS, thread_name_prefix="lambdaflow-commit")
        return _pool


class SideCommits:
    """The commits of one micro-batch after its master commit: submitted as they are ready, settled together."""

    def __init__(self) -> None:
        self._pending: list[tuple[str, Future[bool]]] = []

    def submit(self, name: str, table: Table, writer: str, seq: int, commit: Callable[[], CommitResult]) -> None:
        """Start ``commit`` (of batch ``seq`` by ``writer`` to ``table``, called ``name``) on a commit thread.

        Nothing more is started once a commit of the batch has failed: as after a crash there, the rest
        stays behind for recovery (and :meth:`settle` raises).
        """
        if any(f.done() and not f.cancelled() and f.exception() is not None for _, f in self._pending):
            return
        self._pending.append((name, _executor().submit(_commit, name, table, writer, seq, commit)))

    def settle(self) -> list[str]:
        """Wait for every submitted commit; returns the names of those the table already held (skipped).

        Raises:
            Exception: the first commit's error, once every commit already started has ended too (none is
                left in flight when the caller reloads and retries); commits not started by then are cancelled.
        """
        pending = self._pending
        futures = [future for _, future in pending]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if any(not f.cancelled() and f.exception() is not None for f in done):
            for future in futures:  # like a crash there: what has not started stays behind, for recovery
                future.cancel()
        wait(futures)
        self._pending = []  # only now: interrupted above, abandon() still waits for these
        skipped, errors = [], []
        for name, future in pending:
            if future.cancelled():
                continue
            if future.exception() is not None:
                errors.append(future.exception())
            elif future.result():
                skipped.append(name)
        for extra in errors[1:]:  # one is raised; the others would otherwise leave no trace
            log.error("another commit of the same micro-batch failed too: %r", extra)
        if errors:
            raise errors[0]  # type: ignore[misc]
        return skipped

    def abandon(self) -> None:
        """Wait for every submitted commit and ignore how it ended (another error is on its way up)."""
        try:
            self.settle()
        except BaseException as exc:  # noqa: BLE001 - the caller's error is the one raised
            log.error("a commit of the failed micro-batch failed too: %r", exc)


def _commit(name: str, table: Table, writer: str, seq: int, commit: Callable[[], CommitResult]) -> bool:
    """One commit; True when the table already held the batch."""
    try:
        done = commit().skipped
    except ConcurrentCommitError:
        # two writers completing the same dead writer's batch: the txn conflict lets one through
        if (table.txn_version(writer) or 0) < seq:
            raise
        done = True
    crash_point(f"after:{name}:{seq}")  # fault injection for the crash tests
    return done
