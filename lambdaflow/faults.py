"""Fault injection for the crash tests: die at a named point, like a SIGKILL would.

Set ``LAMBDAFLOW_CRASH_AT=<point>`` to make the process exit with status 137
when it reaches ``<point>``; with ``LAMBDAFLOW_CRASH_ONCE=<file>`` it crashes
only the first time (the file records that it did), so a retry succeeds.
With ``LAMBDAFLOW_CRASH_MODE=raise`` it raises :class:`SimulatedCrash` instead,
so an in-process test can abandon the crashed objects and start afresh.
Unset, these checks cost one dictionary lookup.
"""

from __future__ import annotations

import os
from pathlib import Path

CRASH_AT_ENV = "LAMBDAFLOW_CRASH_AT"
CRASH_ONCE_ENV = "LAMBDAFLOW_CRASH_ONCE"
CRASH_MODE_ENV = "LAMBDAFLOW_CRASH_MODE"


class SimulatedCrash(BaseException):
    """A crash injected in process (a BaseException: no ``except Exception`` may swallow it, as none survives a SIGKILL)."""


def crash_point(point: str) -> None:
    """Exit immediately (status 137, no cleanup) if the environment asks for a crash here."""
    if os.environ.get(CRASH_AT_ENV) != point:
        return
    once = os.environ.get(CRASH_ONCE_ENV)
    if once:
        marker = Path(once)
        if marker.exists():
            return
        marker.write_text(point)
    if os.environ.get(CRASH_MODE_ENV) == "raise":
        raise SimulatedCrash(point)
    os._exit(137)
