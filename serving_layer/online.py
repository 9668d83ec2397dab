"""The online index: the unified views held in memory for key lookups, refreshed on every publish and speed commit.

The SQL views (``unified_<view>``) answer analysts; a point lookup through them
scans the Delta snapshots (tens of milliseconds at 10M events). The index holds,
per view, the same rows the SQL view returns, sorted by key, with a dict from key
to its row span, so a lookup is a dict probe and a slice.

Exactness: every row in the index was computed by the serving SQL itself
(:func:`serving_layer.sql.unified_view_sql` and the merge rule it is built from),
run by the embedded engine on the same snapshot:

- **Full build** (first open, and whenever a batch view has a new version: a
  publish moves W): the merged states and the finalised rows of every key, one
  query each, ordered by the group columns.
- **Speed commit** (only speed tables changed): the partial rows committed since
  the last refresh (``_ingest_seq`` above both the last one seen and W) are merged
  with the keys' current merged states by the same ``merge_sql``, and finalised by
  the same ``finalize_sql``. Merging is associative (docs/architecture.md §4), so
  this equals a full recompute; a test compares every sampled key with the SQL view.
  The keys touched go to an overlay; when a view's overlay outgrows
  :data:`OVERLAY_LIMIT` of its base, the next speed refresh rebuilds that view
  in full (a small view, e.g. of merchants, is touched all over by every commit).
- **Expiry** deletes speed rows at or below W, which the merge rule already
  excludes: nothing to do.

Readers are never blocked and never see half a refresh: a refresh builds a new
immutable :class:`OnlineSnapshot` and replaces one reference to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from lambdaflow.contracts.paths import MASTER_EVENTS, batch_view, speed_view, sql_name
from lambdaflow.contracts.speed import complete_through
from lambdaflow.schemas import INGEST_SEQ
from lambdaflow.sql import to_duckdb
from lambdaflow.views import CompiledView, quote
from serving_layer.engine import Session
from serving_layer.sql import partial_rows_sql, watermark_sql

__all__ = ["OVERLAY_LIMIT", "Key", "OnlineSnapshot", "ViewIndex", "indexed_versions", "refresh_snapshot", "speed_cut"]

#: A key: the values of a view's key columns, in declaration order.
Key = tuple[Any, ...]
#: Overlay size, as a fraction of the base's keys, above which the next refresh rebuilds in full.
OVERLAY_LIMIT = 0.2


@dataclass(frozen=True)
class _Rows:
    """One view's rows for a set of keys: merged states and finalised rows, in the same order, spans by key."""

    states: pa.Table
    rows: pa.Table
    spans: dict[Key, tuple[int, int]]

    @classmethod
    def of(cls, view: CompiledView, states: pa.Table, rows: pa.Table) -> _Rows:
        if states.num_rows != rows.num_rows:
            raise AssertionError(f"{view.name}: {states.num_rows} merged states but {rows.num_rows} finalised rows")
        return cls(states, rows, _spans(rows, view.spec.keys))


@dataclass(frozen=True)
class ViewIndex:
    """The unified rows of one view: a base (built in full) and an overlay of keys changed since."""

    view: CompiledView
    base: _Rows
    overlay: Mapping[Key, tuple[pa.Table, pa.Table]] = field(default_factory=dict)

    def _find(self, key: Key) -> tuple[pa.Table, pa.Table] | None:
        hit = self.overlay.get(key)
        if hit is not None:
            return hit
        span = self.base.spans.get(key)
        if span is None:
            return None
        start, stop = span
        return self.base.states.slice(start, stop - start), self.base.rows.slice(start, stop - start)

    def rows(self, key: Key) -> pa.Table:
        """The key's finalised rows (what ``unified_<view>`` returns for it); empty when the key has none."""
        hit = self._find(key)
        return hit[1] if hit is not None else self.view.result_schema.empty_table()

    def states(self, key: Key) -> pa.Table:
        """The key's merged state rows (the prior state features read); empty when the key has none."""
        hit = self._find(key)
        return hit[0] if hit is not None else self.view.state_schema.empty_table()

    @property
    def keys(self) -> int:
        """Distinct keys held (base and overlay)."""
        return len(self.base.spans) + sum(1 for k in self.overlay if k not in self.base.spans)

    @property
    def nbytes(self) -> int:
        """Arrow bytes held (the Python dicts come on top)."""
        return self.base.states.nbytes + self.base.rows.nbytes + sum(s.nbytes + r.nbytes for s, r in self.overlay.values())


@dataclass(frozen=True)
class OnlineSnapshot:
    """Every view's index as of one set of table versions; replaced whole, never changed."""

    views: dict[str, ViewIndex]
    #: table versions read (the engine session's)
    versions: dict[str, int]
    #: per view: the batch watermark W
    watermarks: dict[str, int]
    #: per view: the newest speed ``_ingest_seq`` merged (None while there is none)
    freshest: dict[str, int | None]
    #: "full" or "speed": how this snapshot was made from the one before
    kind: str = "full"
    #: every micro-batch up to this one, and none after, is in the speed rows held (:func:`complete_through`)
    through: int = 0

    @property
    def as_of_seq(self) -> int:
        """The newest micro-batch whose rows the snapshot holds, all earlier ones included: its point in time."""
        marks = [*self.watermarks.values(), *(f for f in self.freshest.values() if f is not None)]
        return max(marks) if marks else -1


def indexed_versions(versions: Mapping[str, int], views: Mapping[str, CompiledView]) -> dict[str, int]:
    """The versions of the tables the index reads (not, e.g., the feature log the API itself appends to)."""
    read = {t for name in views for t in (batch_view(name), speed_view(name))}
    return {name: v for name, v in versions.items() if name in read}


def speed_cut(session: Session, views: Mapping[str, CompiledView]) -> int:
    """The complete-prefix cut of ``session``'s speed rows (:func:`lambdaflow.contracts.speed.complete_through`).

    The speed layer commits a micro-batch's views one after another, and several writers commit independently;
    rows taken as found could mix two points in time within a view or across views (the consistency check
    would rightly report the vectors served from them). Cut at the newest micro-batch that is everywhere.
    """
    speed = [session.speed_marks[speed_view(name)] for name in views if speed_view(name) in session.speed_marks]
    master = session.speed_marks.get(MASTER_EVENTS, ())
    return complete_through(master, speed) if master else max((max(m, default=0) for m in speed), default=0)


def refresh_snapshot(session: Session, views: Mapping[str, CompiledView], previous: OnlineSnapshot | None) -> OnlineSnapshot:
    """The snapshot for ``session``'s table versions, built from ``previous`` when only speed rows were added.

    Args:
        session: an engine session opened on the newest table versions (used by this call only).
        views: the pipeline's compiled views.
        previous: the snapshot being served, or None.
    """
    marks = {name: _scalar(session, f"SELECT {watermark_sql(view)}") for name, view in views.items()}
    batch_moved = previous is None or any(
        session.versions.get(batch_view(n)) != previous.versions.get(batch_view(n)) or marks[n] != previous.watermarks[n] for n in views
    )
    through = speed_cut(session, views)
    if not batch_moved and previous is not None:
        return _with_speed_rows(session, views, previous, marks, through)
    out, freshest = {}, {}
    for name, view in views.items():
        out[name] = ViewIndex(view, _full(session, view, through))
        freshest[name] = _freshest(session, view, through)
    return OnlineSnapshot(out, dict(session.versions), marks, freshest, "full", through)


def _full(session: Session, view: CompiledView, through: int) -> _Rows:
    order = ", ".join(quote(c) for c in view.group_columns)
    merged = view.merge_sql(partial_rows_sql(view, through))
    states = session.connection.sql(f"SELECT * FROM ({to_duckdb(merged)}) AS m ORDER BY {order}").to_arrow_table()
    rows = session.connection.sql(f"SELECT * FROM ({to_duckdb(view.finalize_sql(merged))}) AS f ORDER BY {order}").to_arrow_table()
    return _Rows.of(view, states.cast(view.state_schema), rows.cast(view.result_schema))


def _with_speed_rows(
    session: Session, views: Mapping[str, CompiledView], previous: OnlineSnapshot, marks: dict[str, int], through: int
) -> OnlineSnapshot:
    """``previous`` with the speed partials of the micro-batches after its cut, up to ``through``, merged in."""
    out, freshest = dict(previous.views), dict(previous.freshest)
    through = max(through, previous.through)
    scratch = _scratch()  # one private connection for this refresh's merges (the session's is locked down and shared)
    try:
        for name, view in views.items():
            changed = _speed_rows_of(session, scratch, view, previous, marks[name], through)
            if changed is not None:
                out[name], freshest[name] = changed
    finally:
        scratch.close()
    return OnlineSnapshot(out, dict(session.versions), marks, freshest, "speed", through)


def _speed_rows_of(
    session: Session, scratch: Any, view: CompiledView, previous: OnlineSnapshot, mark: int, through: int
) -> tuple[ViewIndex, int | None] | None:
    """One view's index with its speed partials in (previous cut, ``through``] merged in; None when it has none."""
    seen = max(mark, previous.through)
    speed = quote(sql_name(speed_view(view.name)))
    columns = ", ".join(quote(c) for c in view.state_schema.names)
    seq = quote(INGEST_SEQ)
    new = session.connection.sql(f"SELECT {columns} FROM {speed} WHERE {seq} > {int(seen)} AND {seq} <= {int(through)}").to_arrow_table()
    if new.num_rows == 0:
        return None
    index = previous.views[view.name]
    if _overlay_full(index):  # this view only: a small view touched all over is cheaper to rebuild than to patch
        return ViewIndex(view, _full(session, view, through)), _freshest(session, view, through)
    touched = sorted(set(zip(*(new.column(k).to_pylist() for k in view.spec.keys))), key=repr)
    partials = pa.concat_tables([*_current_states(index, touched), new.cast(view.state_schema)])
    changed = _merge_small(scratch, view, partials)
    overlay = dict(index.overlay)
    for key, (start, stop) in changed.spans.items():
        overlay[key] = (changed.states.slice(start, stop - start), changed.rows.slice(start, stop - start))
    return ViewIndex(view, index.base, overlay), _freshest(session, view, through)


def _merge_small(con: Any, view: CompiledView, partials: pa.Table) -> _Rows:
    """Merge and finalise a few keys' partial rows with the serving SQL, on the refresh's private connection."""
    con.register("partials", partials)
    order = ", ".join(quote(c) for c in view.group_columns)
    merged = view.merge_sql('SELECT * FROM "partials"')
    states = con.sql(f"SELECT * FROM ({to_duckdb(merged)}) AS m ORDER BY {order}").to_arrow_table()
    rows = con.sql(f"SELECT * FROM ({to_duckdb(view.finalize_sql(merged))}) AS f ORDER BY {order}").to_arrow_table()
    con.unregister("partials")
    return _Rows.of(view, states.cast(view.state_schema), rows.cast(view.result_schema))


def _current_states(index: ViewIndex, keys: Sequence[Key]) -> list[pa.Table]:
    """The merged state rows of ``keys`` held now: overlay tables as they are, base rows in one ``take``."""
    overlaid = [index.overlay[k][0] for k in keys if k in index.overlay]
    spans = [index.base.spans[k] for k in keys if k not in index.overlay and k in index.base.spans]
    if not spans:
        return overlaid
    rows = np.concatenate([np.arange(a, b) for a, b in spans])
    return [*overlaid, index.base.states.take(pa.array(rows, pa.int64()))]


def _scratch() -> Any:
    """A DuckDB connection for merging in-memory rows (the session's is locked down and shared)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _freshest(session: Session, view: CompiledView, through: int) -> int | None:
    """The newest speed batch merged from the view's speed table (``serving_freshness.freshest_ingest_seq``)."""
    seq = quote(INGEST_SEQ)
    value = _scalar(session, f"SELECT MAX({seq}) FROM {quote(sql_name(speed_view(view.name)))} WHERE {seq} <= {int(through)}")
    return None if value is None else int(value)


def _scalar(session: Session, sql: str) -> Any:
    rows = session.connection.execute(sql).fetchall()  # fetchone would leave the result open on the connection
    return rows[0][0] if rows else None


def _overlay_full(index: ViewIndex) -> bool:
    return len(index.overlay) > OVERLAY_LIMIT * max(len(index.base.spans), 1000)


def _spans(rows: pa.Table, keys: Sequence[str]) -> dict[Key, tuple[int, int]]:
    """Row span of every key in ``rows``, which are sorted by the keys (vectorised: one dict entry per key, not per row)."""
    n = rows.num_rows
    if n == 0:
        return {}
    change = np.zeros(n, bool)
    change[0] = True
    for k in keys:
        codes, _ = pd.factorize(rows.column(k).to_numpy(zero_copy_only=False), use_na_sentinel=False)
        change[1:] |= codes[1:] != codes[:-1]
    starts = np.flatnonzero(change)
    stops = np.append(starts[1:], n)
    firsts = rows.select(list(keys)).take(pa.array(starts))
    tuples = list(zip(*(firsts.column(k).to_pylist() for k in keys)))
    return {key: (int(a), int(b)) for key, a, b in zip(tuples, starts, stops)}
