"""Keeping the online index fresh: a background thread that follows the tables' Delta versions.

Every ``serving.refresh_seconds`` the thread reads each table's version; when
one moved, it opens an engine session on the new versions and builds the next
:class:`~serving_layer.online.OnlineSnapshot` from the current one (a full build
after a publish, a merge of the new speed rows otherwise), then swaps it in.
Lookups read whatever snapshot is current, without a lock. If the newest
versions cannot be read (a corrupt Delta log, storage down), the last good
snapshot keeps answering and :attr:`OnlineIndex.problem` says why.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref
from collections.abc import Callable

from lambdaflow.config import Settings
from lambdaflow.contracts.paths import existing_tables
from lambdaflow.errors import TableError
from lambdaflow.tables import Table
from lambdaflow.views import compile_views
from serving_layer.engine import open_session
from serving_layer.online import OnlineSnapshot, indexed_versions, refresh_snapshot

__all__ = ["OnlineIndex", "ProblemReport", "SnapshotUnavailable", "table_versions"]

log = logging.getLogger(__name__)


class SnapshotUnavailable(RuntimeError):
    """No snapshot of the tables could be opened yet; the message says why (answered with 503)."""


class ProblemReport:
    """Why the newest table snapshots are not being served (None when they are), logged once per change."""

    def __init__(self) -> None:
        self.problem: str | None = None

    def ok(self) -> None:
        """The newest snapshots are served (again)."""
        if self.problem is not None:
            log.warning("serving the newest table snapshots again")
        self.problem = None

    def failed(self, exc: BaseException, have_last_good: bool) -> None:
        """Opening the newest snapshots failed with ``exc``; the last good one, if any, keeps answering."""
        fallback = "serving the last good one" if have_last_good else "none opened yet"
        problem = f"cannot open the newest table snapshots ({fallback}): {exc}"
        if problem != self.problem:
            log.error("%s", problem)
        self.problem = problem


def table_versions(settings: Settings) -> dict[str, int]:
    """The current Delta version of every existing table, by name (what an engine session would read).

    Raises:
        TableError: a table's log cannot be read; the message names the table and gives the first line of the reason.
    """
    out = {}
    for name, uri in existing_tables(settings.profile):
        try:
            out[name] = Table(uri).version()
        except Exception as exc:  # delta-rs raises several kinds: the reason is kept, its backtrace dropped
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TableError(f"cannot read table {name} at {uri}: {reason}") from exc
    return out


class OnlineIndex:
    """The online snapshot being served, refreshed by a daemon thread started on first use."""

    def __init__(
        self, settings: Settings, interval: float, on_refresh: Callable[[str, float], None] | None = None, freeze: bool = False
    ) -> None:
        """Args:
        settings: the pipeline and profile served.
        interval: seconds between looks at the table versions.
        on_refresh: called with the refresh kind ("full" or "speed") and its duration in seconds.
        freeze: after a full build, move every live object out of the cycle collector's sight (``gc.freeze``).
            For a server process only (``lambdaflow serve``): it is process-wide.
        """
        self.settings = settings
        self.interval = interval
        self.views = compile_views(settings.pipeline)
        self.snapshot: OnlineSnapshot | None = None
        self.report = ProblemReport()
        self._on_refresh = on_refresh
        self._freeze = freeze
        self._lock = threading.Lock()  # one refresh at a time
        self._thread: threading.Thread | None = None

    def current(self) -> OnlineSnapshot:
        """The snapshot to answer from; the first call builds it.

        Raises:
            SnapshotUnavailable: no snapshot could be built so far.
        """
        snapshot = self.snapshot
        if snapshot is None:
            self.refresh()
            snapshot = self.snapshot
        self._start()  # also after a failure: the thread keeps trying, so the index recovers by itself
        if snapshot is None:
            raise SnapshotUnavailable(self.problem or "no table snapshot opened yet")
        return snapshot

    def refresh(self) -> bool:
        """Build and swap in the snapshot of the newest table versions if they moved; True when it did."""
        with self._lock:
            try:
                previous = self.snapshot
                if previous is not None and indexed_versions(table_versions(self.settings), self.views) == indexed_versions(
                    previous.versions, self.views
                ):
                    self.report.ok()
                    return False
                t0 = time.perf_counter()
                session = open_session(self.settings)
                try:
                    fresh = refresh_snapshot(session, self.views, previous)
                finally:
                    session.connection.close()
                self.snapshot = fresh
                if fresh.kind == "full" and self._freeze:
                    # millions of index objects need no cycle collection (nothing in a snapshot refers back): move
                    # them out of the collector's sight, or every full collection walks them during requests
                    gc.freeze()
                if self._on_refresh is not None:
                    self._on_refresh(fresh.kind, time.perf_counter() - t0)
                self.report.ok()
                return True
            except Exception as exc:  # noqa: BLE001 - keep serving the last good snapshot; /health reports why
                self.report.failed(exc, self.snapshot is not None)
                return False

    @property
    def problem(self) -> str | None:
        """Why the newest table versions are not being served, or None when they are."""
        return self.report.problem

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=_follow, args=(weakref.ref(self), self.interval), name="online-index", daemon=True)
            self._thread.start()


def _follow(ref: weakref.ReferenceType[OnlineIndex], interval: float) -> None:
    """Refresh every ``interval`` seconds for as long as the index is in use (a weak reference: no leak per app)."""
    while True:
        time.sleep(interval)
        index = ref()
        if index is None:
            return
        index.refresh()
        del index
