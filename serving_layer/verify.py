"""``lambdaflow verify``: every unified view against a from-scratch recompute over all of ``master/events``.

The recompute deduplicates events by id (first ingested copy) and runs the
view compiler's Arrow form over everything; the unified view is read through
the serving SQL. Keys are compared one by one: matching, differing (some
aggregate differs beyond floating-point noise), missing (only in the
recompute) and extra (only in the unified view).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.config import Settings
from lambdaflow.contracts.master import events_table, first_copies
from lambdaflow.contracts.paths import MASTER_EVENTS, speed_view
from lambdaflow.schemas import INGEST_SEQ
from lambdaflow.views import compile_views
from serving_layer.engine import open_session
from serving_layer.sql import unified_name, watermark_sql


@dataclass
class ViewCheck:
    """The outcome for one view."""

    view: str
    matching: int = 0
    differing: int = 0
    missing: int = 0
    extra: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.differing == self.missing == self.extra == 0


def to_millis(value: dt.datetime) -> dt.datetime:
    """A timestamp rounded to the nearest millisecond, half up, as Trino's Delta connector reads it."""
    value += dt.timedelta(microseconds=500)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


class SqlSession(Protocol):
    """What verify reads through: the embedded engine's :class:`~serving_layer.engine.Session` or a Trino session."""

    versions: dict[str, int]
    speed_seq: dict[str, int]

    def query(self, sql: str, dialect: str = "trino") -> pa.Table: ...


def _same(a: Any, b: Any, millis: bool = False) -> bool:
    if millis and isinstance(a, dt.datetime) and isinstance(b, dt.datetime):
        # Trino's Delta connector reads timestamps as timestamp(3), rounded to the nearest millisecond.
        return to_millis(a) == to_millis(b)
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return a == b


def verify(
    settings: Settings, session: SqlSession | None = None, master_version: int | None = None, millis: bool = False
) -> list[ViewCheck]:
    """Compare every unified view with a from-scratch recompute.

    Args:
        session: the engine session to read unified views from (default: a fresh one).
        master_version: recompute from this master version (default: the one the session read).
        millis: compare timestamps at millisecond precision (a Trino session).
    """
    session = session or open_session(settings)
    spec = settings.pipeline.events
    master = events_table(settings, create=False)
    version = master_version if master_version is not None else session.versions.get(MASTER_EVENTS)
    events = master.snapshot(version).to_arrow() if master.exists() and version is not None else None
    checks = []
    for name, view in compile_views(settings.pipeline).items():
        check = ViewCheck(name)
        # what the unified view can contain: batch rows up to W, speed rows up to its last committed batch
        w = session.query(f"SELECT {watermark_sql(view)} AS w").column("w")[0].as_py()
        covered = max(w, session.speed_seq.get(speed_view(name), 0))
        expected = view.result_schema.empty_table()
        if events is not None and events.num_rows:
            rows = events.filter(pc.less_equal(events[INGEST_SEQ], covered))
            if rows.num_rows:
                expected = view.finalize_arrow(view.partials_arrow(first_copies(rows, spec.id_column, spec.time_column)))
        got = session.query(f'SELECT * FROM "{unified_name(name)}"')
        keys = view.group_columns
        want_rows = {tuple(r[k] for k in keys): r for r in expected.to_pylist()}
        got_rows = {tuple(r[k] for k in keys): r for r in got.to_pylist()}
        for key, want in want_rows.items():
            have = got_rows.get(key)
            if have is None:
                check.missing += 1
                if len(check.examples) < 3:
                    check.examples.append(f"missing {key}")
            elif all(_same(have[c], want[c], millis) for c in want):
                check.matching += 1
            else:
                check.differing += 1
                if len(check.examples) < 3:
                    diff = {c: (have[c], want[c]) for c in want if not _same(have[c], want[c], millis)}
                    check.examples.append(f"{key}: unified vs recompute {diff}")
        check.extra = sum(1 for key in got_rows if key not in want_rows)
        checks.append(check)
    return checks
