"""The one feature function, used by the speed layer at scoring time and by the batch layer for training sets.

For an event, the state of a view feature is the merged partial state of the
events with the same **view key** that **precede it in ingest order** (docs/architecture.md §6):

    state(e) = prior state of the key (batch view as of W + speed partials since)
             ⊕ earlier rows of the same key in the table being featurised

restricted, for a windowed feature, to the buckets ``(bucket(e) - window, bucket(e)]``.
The view key is the view's own key: the partition key, or any other event
column(s), e.g. the merchant of a payment partitioned by account.
The speed layer passes its prior state and one micro-batch; the batch layer
passes no prior state and *all* of a view key's events (one Spark pass per
distinct view key, joined by event id), so both compute exactly the same
numbers for the same event (parity tests check it).

An event whose view key holds a null outside the partition key has no such
history: its features from that view are missing (NaN). A null partition key
is a key of its own (``events.null_keys: key``).

A feature ``sum`` over no values is 0 (a view's is null); ``min``/``max`` over
no values and means/variances of too few values are missing (NaN), which
XGBoost treats as missing.

Rows are ordered by :func:`position_order`: ingest sequence (the micro-batch), then
Kafka partition and offset, then event time and id as tie-breakers for rows
without Kafka coordinates. For the partition key this is the partition's own
order. For another key, whose events are spread over partitions, it is the order
in which micro-batches ingested them, and within one micro-batch partition by
partition: a fact recorded in every master row, so training replays it exactly,
but not the order in which the events happened or were produced.

Long because the state rule (in-batch prefix, prior lookup, key coding) is one
algorithm whose parts must agree exactly; split, they would share private helpers.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.config import EventFeature, PipelineConfig, RatioFeature, ViewFeature
from lambdaflow.contracts.master import row_order
from lambdaflow.schemas import BUCKET, INGEST_SEQ, KAFKA_OFFSET, KAFKA_PARTITION
from lambdaflow.views import CompiledView, StateColumn, arrow_predicate, compile_views

#: Identity of each merge kind over float64 state (what "no events" contributes).
_IDENTITY = {"sum": 0.0, "min": np.inf, "max": -np.inf}


def position_order(events: pa.Table, time_column: str, id_column: str) -> np.ndarray:
    """Row indices of ``events`` in partition order (see module docstring)."""
    return row_order(events, (INGEST_SEQ, KAFKA_PARTITION, KAFKA_OFFSET, time_column, id_column))


@dataclass(frozen=True)
class _Window:
    """One (view, window) pair some features read."""

    view: CompiledView
    window: int | None
    aggregates: frozenset[str]

    @property
    def states(self) -> list[StateColumn]:
        """The state columns the window's features need (a view may hold others, e.g. 'last')."""
        return [s for s in self.view.states if s.name.rsplit("__", 1)[0] in self.aggregates]

    @property
    def k(self) -> int:
        """Buckets in the window (1 for all-time)."""
        return 1 if self.window is None or self.view.spec.bucket is None else self.window // self.view.spec.bucket

    @property
    def bucket(self) -> int | None:
        return self.view.spec.bucket if self.window is not None else None


class FeatureFunction:
    """The pipeline's features: ``compute(events, prior)`` → one float64 column per feature."""

    def __init__(self, pipeline: PipelineConfig) -> None:
        self.pipeline = pipeline
        self.views = compile_views(pipeline)
        self.key = pipeline.events.partition_key

    @cached_property
    def names(self) -> list[str]:
        """Feature names in model-input order."""
        return [f.name for f in self.pipeline.features]

    @cached_property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(n, pa.float64()) for n in self.names])

    @cached_property
    def _windows(self) -> dict[tuple[str, int | None], _Window]:
        needed: dict[tuple[str, int | None], set[str]] = {}
        for f in self.pipeline.features:
            if isinstance(f, ViewFeature):
                needed.setdefault((f.view, f.window), set()).add(f.aggregate)
        return {(v, w): _Window(self.views[v], w, frozenset(aggs)) for (v, w), aggs in needed.items()}

    @cached_property
    def key_groups(self) -> dict[tuple[str, ...], list[str]]:
        """View-feature names by the key of the view they read; the partition key's group first when it has one.

        Each group needs all the events of its key in one place: the batch layer computes a group per pass.
        """
        groups: dict[tuple[str, ...], list[str]] = {}
        for f in self.pipeline.features:
            if isinstance(f, ViewFeature):
                groups.setdefault(tuple(self.views[f.view].spec.keys), []).append(f.name)
        primary = (self.key,)
        return dict(sorted(groups.items(), key=lambda item: item[0] != primary))

    def compute(self, events: pa.Table, prior: Mapping[str, pa.Table] | None = None) -> pa.Table:
        """Features of every row of ``events``, in the same row order.

        Args:
            events: valid events (with position columns when available).
            prior: per view name, merged state rows (the view's state schema) of
                everything before these events; None for no prior state.
        """
        return self.assemble(events, self.view_values(events, prior))

    def view_values(
        self,
        events: pa.Table,
        prior: Mapping[str, pa.Table] | None = None,
        keys: tuple[str, ...] | None = None,
        observers: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """The view features of every row of ``events`` (only those of views keyed by ``keys``, when given).

        Args:
            events: valid events; every event of each key read must be here or in ``prior``.
            prior: as for :meth:`compute`.
            keys: one entry of :attr:`key_groups`; None for all view features.
            observers: rows featurised as if they were events but adding nothing to any state (served
                vectors replayed offline, batch_layer/consistency.py); None for none.
        """
        spec = self.pipeline.events
        order = position_order(events, spec.time_column, spec.id_column)
        pos = np.empty(events.num_rows, np.int64)
        pos[order] = np.arange(events.num_rows)
        coders: dict[tuple[str, ...], _KeyCoder] = {}
        values: dict[str, np.ndarray] = {}
        for (name, window), w in self._windows.items():
            view_keys = tuple(w.view.spec.keys)
            if keys is not None and view_keys != keys:
                continue
            coder = coders.get(view_keys) or coders.setdefault(view_keys, _KeyCoder(events, view_keys, self.key))
            merged = self._window_states(w, events, pos, coder, (prior or {}).get(name), observers)
            for f in self.pipeline.features:
                if isinstance(f, ViewFeature) and (f.view, f.window) == (name, window):
                    finalised = w.view.finalize_columns(functools.partial(_column_of, merged), [f.aggregate])[f.aggregate]
                    column = pc.fill_null(pc.cast(finalised, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
                    values[f.name] = np.where(coder.no_history, np.nan, np.asarray(column, np.float64))
        return values

    def assemble(self, events: pa.Table, view_values: Mapping[str, np.ndarray]) -> pa.Table:
        """The feature table: event features from ``events``, the given view features, then the ratios.

        Raises:
            KeyError: a view feature is missing from ``view_values``.
        """
        values: dict[str, np.ndarray] = {}
        for f in self.pipeline.features:
            if isinstance(f, EventFeature):
                values[f.name] = _event_feature(events.column(f.column), f.categories)
            elif isinstance(f, ViewFeature):
                values[f.name] = view_values[f.name]
            elif isinstance(f, RatioFeature):
                num, den = values[f.numerator], values[f.denominator]
                with np.errstate(divide="ignore", invalid="ignore"):
                    values[f.name] = np.where(den == 0, 0.0, num / den)
        return pa.table({name: pa.array(values[name], pa.float64()) for name in self.names})

    # ------------------------------------------------------------------ state

    def _window_states(
        self, w: _Window, events: pa.Table, pos: np.ndarray, coder: _KeyCoder, prior: pa.Table | None, observers: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        """Merged state columns per row for one (view, window): prior ⊕ earlier rows, over the window's buckets."""
        view, n = w.view, events.num_rows
        key_codes = coder.codes
        states = w.states
        prior_lookup = _PriorLookup(view, states, prior, coder, w.bucket)
        if coder.distinct:  # no event has an earlier one of its key here (e.g. /features): the prior state is all
            return self._prior_only(w, events, key_codes, prior_lookup)
        contrib = _row_states(view, states, events, observers)
        if w.bucket is not None:
            micros = pc.cast(events.column(view.time_column), pa.int64()).to_numpy()
            bucket = np.floor_divide(micros, w.bucket * 1_000_000)
        else:
            bucket = np.zeros(n, np.int64)
        base = int(bucket.min()) - w.k if n else 0
        bidx = bucket - base  # >= k, so every bucket of every window is >= 0
        nb = int(bidx.max()) + 1 if n else 1
        group = key_codes * nb + bidx
        order = np.lexsort((pos, group))
        g_sorted, p_sorted = group[order], pos[order]
        composite = g_sorted * (n + 1) + p_sorted
        frame = pd.DataFrame({s.name: contrib[s.name][order] for s in states})
        frame["__g"] = g_sorted
        grouped = frame.groupby("__g", sort=False)
        cum = {}
        for s in states:
            kind = _kind(s)
            cum[s.name] = (
                grouped[s.name].cumsum() if kind == "sum" else grouped[s.name].cummin() if kind == "min" else grouped[s.name].cummax()
            ).to_numpy(np.float64)
        total = {s.name: np.full(n, _IDENTITY[_kind(s)]) for s in states}
        for m in range(w.k):
            target = key_codes * nb + (bidx - m)
            idx = np.searchsorted(composite, target * (n + 1) + pos, side="left") - 1
            hit = (idx >= 0) & (g_sorted[np.clip(idx, 0, None)] == target) if n else np.zeros(0, bool)
            from_prior = prior_lookup.lookup(key_codes, bucket - m)
            for s in states:
                kind = _kind(s)
                inbatch = np.where(hit, cum[s.name][np.clip(idx, 0, None)] if n else 0.0, _IDENTITY[kind])
                total[s.name] = _combine(kind, _combine(kind, total[s.name], inbatch), from_prior[s.name])
        return {s.name: _finish(_kind(s), total[s.name]) for s in states}

    @staticmethod
    def _prior_only(w: _Window, events: pa.Table, key_codes: np.ndarray, prior_lookup: _PriorLookup) -> dict[str, np.ndarray]:
        """Window states from the prior state alone (what the general path computes when no key repeats)."""
        if w.bucket is not None:
            bucket = np.floor_divide(pc.cast(events.column(w.view.time_column), pa.int64()).to_numpy(), w.bucket * 1_000_000)
        else:
            bucket = np.zeros(events.num_rows, np.int64)
        shifts = np.arange(w.k)  # every bucket of every row's window in one lookup
        found = prior_lookup.lookup(np.repeat(key_codes, w.k), (bucket[:, None] - shifts[None, :]).ravel())
        # accumulate, not reduce: buckets added one after another, in the general path's order (reduce sums
        # pairwise, which rounds differently in the last bits)
        return {s.name: _finish(_kind(s), _REDUCE[_kind(s)].accumulate(found[s.name].reshape(-1, w.k), axis=1)[:, -1]) for s in w.states}


def _key_values(column: pa.ChunkedArray) -> np.ndarray:
    """Key values as numpy, nulls as NaN: the way ``pd.factorize(use_na_sentinel=False)`` spells the null key."""
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype == object and column.null_count:
        values = pd.Series(values, dtype=object).where(pd.notna(values), np.nan).to_numpy()
    return values


class _KeyCoder:
    """Dense integer codes of the rows' view keys, and the same codes for other rows' keys (-1: not among them).

    A composite key is coded column by column, each step pairing the codes so far with the next
    column's and re-coding the pairs densely, so no product of sizes can overflow.
    """

    def __init__(self, events: pa.Table, keys: tuple[str, ...], partition_key: str) -> None:
        self.keys = keys
        columns = [_key_values(events.column(k)) for k in keys]
        self._uniques: list[pd.Index] = []
        self._pairs: list[pd.Index] = []
        self._looked_up: dict[int, tuple[pa.Table, np.ndarray]] = {}
        codes = np.zeros(events.num_rows, np.int64)
        for i, values in enumerate(columns):
            own, uniques = pd.factorize(values, use_na_sentinel=False)
            self._uniques.append(pd.Index(uniques))
            if i == 0:
                codes = own.astype(np.int64)
                continue
            paired, pairs = pd.factorize(codes * len(uniques) + own)
            self._pairs.append(pd.Index(pairs))
            codes = paired.astype(np.int64)
        self.codes = codes
        #: every row has a key of its own
        self.distinct = len(np.unique(codes)) == len(codes)
        # no history outside the partition key's own null-key rule (module docstring)
        others = [values for key, values in zip(keys, columns) if key != partition_key]
        self.no_history = np.logical_or.reduce([pd.isna(v) for v in others]) if others else np.zeros(events.num_rows, bool)

    def lookup(self, rows: pa.Table) -> np.ndarray:
        """Codes of ``rows``' keys; -1 for a key no event here has (remembered: a view's windows share its prior rows)."""
        cached = self._looked_up.get(id(rows))
        if cached is not None and cached[0] is rows:
            return cached[1]
        codes = self._lookup(rows)
        self._looked_up[id(rows)] = (rows, codes)
        return codes

    def _lookup(self, rows: pa.Table) -> np.ndarray:
        codes = np.zeros(rows.num_rows, np.int64)
        for i, key in enumerate(self.keys):
            own = self._uniques[i].get_indexer(_key_values(rows.column(key)))
            if i == 0:
                codes = own.astype(np.int64)
                continue
            radix = len(self._uniques[i])
            pair = np.where((codes >= 0) & (own >= 0), codes * radix + own, -1)
            codes = np.where(pair >= 0, self._pairs[i - 1].get_indexer(pair), -1).astype(np.int64)
        return codes


class _PriorLookup:
    """Prior state rows of a view, merged per (key code, bucket index) and looked up by binary search.

    Numpy only: ``/features`` computes one vector per request, where pandas' per-call costs would dominate.
    """

    def __init__(self, view: CompiledView, states: list[StateColumn], prior: pa.Table | None, coder: _KeyCoder, bucket: int | None) -> None:
        self.columns = states
        self.slots = np.zeros(0, np.int64)
        self.values: dict[str, np.ndarray] = {}
        if prior is None or prior.num_rows == 0:
            return
        codes = coder.lookup(prior)
        keep = codes >= 0
        if not keep.any():
            return
        if bucket is not None:
            micros = pc.cast(prior.column(BUCKET), pa.int64()).to_numpy()
            buckets = np.floor_divide(micros, bucket * 1_000_000)
        else:
            buckets = np.zeros(prior.num_rows, np.int64)
        slots = _slot(codes[keep], buckets[keep])
        order = np.argsort(slots, kind="stable")
        slots = slots[order]
        first = np.flatnonzero(np.r_[True, slots[1:] != slots[:-1]])
        self.slots = slots[first]
        # all-time windows over bucketed views collapse the buckets: merge per (key, bucket) first
        for s in states:
            values = _as_float(prior.column(s.name), s)[keep][order]
            self.values[s.name] = _REDUCE[_kind(s)].reduceat(values, first)

    def lookup(self, key_codes: np.ndarray, buckets: np.ndarray) -> dict[str, np.ndarray]:
        n = len(key_codes)
        if not len(self.slots):
            return {s.name: np.full(n, _IDENTITY[_kind(s)]) for s in self.columns}
        target = _slot(key_codes, buckets)
        idx = np.clip(np.searchsorted(self.slots, target), 0, len(self.slots) - 1)
        hit = self.slots[idx] == target
        return {s.name: np.where(hit, self.values[s.name][idx], _IDENTITY[_kind(s)]) for s in self.columns}


#: The numpy reduction of each merge kind.
_REDUCE = {"sum": np.add, "min": np.minimum, "max": np.maximum}


def _slot(codes: np.ndarray, buckets: np.ndarray) -> np.ndarray:
    """One int64 per (key code, bucket index): codes are row counts, buckets hours or days since 1970 (|b| < 2^31)."""
    return codes.astype(np.int64) * (1 << 32) + (buckets.astype(np.int64) + (1 << 31))


def _kind(s: StateColumn) -> str:
    if s.merge == "last" or s.part in ("last", "last_time"):
        raise ValueError(f"state {s.name}: 'last' aggregates cannot feed features")
    return s.merge


def _combine(kind: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b if kind == "sum" else np.minimum(a, b) if kind == "min" else np.maximum(a, b)


def _finish(kind: str, values: np.ndarray) -> np.ndarray:
    """Turn identities back into 'no value' (NaN) for min/max."""
    return np.where(np.isinf(values), np.nan, values) if kind in ("min", "max") else values


def _as_float(column: pa.ChunkedArray, s: StateColumn) -> np.ndarray:
    if pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.int64())
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    return np.where(np.isnan(values), _IDENTITY[_kind(s)], values)


def _row_states(view: CompiledView, states: list[StateColumn], events: pa.Table, observers: np.ndarray | None) -> dict[str, np.ndarray]:
    """Each row's own contribution to every state column (identity where filtered out, null, or an observer)."""
    n = events.num_rows
    keep = np.ones(n, bool) if observers is None else ~observers
    if view.spec.filters:
        # the view's own Arrow predicate, so the filter means the same here as in its partials
        table = pa.table({**{f.column: events.column(f.column) for f in view.spec.filters}, "__i": np.arange(n)})
        kept = table
        for flt in view.spec.filters:
            kept = kept.filter(arrow_predicate(flt, view.event_schema.field(flt.column).type))
        passed = np.zeros(n, bool)
        passed[kept.column("__i").to_numpy()] = True
        keep &= passed
    out: dict[str, np.ndarray] = {}
    for s in states:
        kind = _kind(s)
        if s.part == "count":
            vals = np.ones(n)
        else:
            col = events.column(s.source)
            if pa.types.is_timestamp(col.type):
                col = pc.cast(col, pa.int64())
            x = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
            valid = ~np.isnan(x)
            if s.part == "n":
                vals = valid.astype(np.float64)
            elif s.part == "sumsq":
                vals = np.where(valid, x * x, 0.0)
            else:
                vals = np.where(valid, x, _IDENTITY[kind])
        out[s.name] = np.where(keep, vals, _IDENTITY[kind])
    return out


def _event_feature(column: pa.ChunkedArray, categories: list[str] | None) -> np.ndarray:
    if categories is not None:
        codes = pd.Index(categories).get_indexer(column.to_numpy(zero_copy_only=False))
        return codes.astype(np.float64)
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.int8())
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)


def _column_of(states: Mapping[str, np.ndarray], name: str) -> pa.Array:
    """One state column of merged window states, as Arrow (what ``finalize_columns`` reads)."""
    return pa.array(states[name])
