"""Online lookups on an :class:`~serving_layer.online.OnlineSnapshot`: keys from request text, prior state, feature vectors.

Feature vectors come from the one feature function (:class:`lambdaflow.features.FeatureFunction`)
with, as prior state, each key's merged rows from the index: the same state the speed layer
would hold for the key under the merge rule, so ``/features`` and ``/score`` compute what
the speed layer would for the same events now.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import pyarrow as pa

from lambdaflow.config import PipelineConfig, ViewFeature
from lambdaflow.errors import LambdaflowError
from lambdaflow.features import FeatureFunction
from lambdaflow.schemas import event_schema
from lambdaflow.views import CompiledView
from serving_layer.online import Key, OnlineSnapshot

__all__ = [
    "MAX_BATCH_KEYS",
    "BadLookup",
    "feature_vectors",
    "freshness",
    "parse_key",
    "parse_time",
    "prior_states",
    "probe_event",
    "query_fields",
]

#: Most keys one ``POST /features`` may ask for.
MAX_BATCH_KEYS = 1000


class BadLookup(LambdaflowError, ValueError):
    """A key or field given in a request does not fit the pipeline (answered with 400 or 422, the message says why)."""


def _typed(value: str, field: pa.Field) -> object:
    """A request string as a value of ``field``'s Arrow type.

    Raises:
        BadLookup: the text is not a value of that type.
    """
    try:
        return pa.array([value], pa.string()).cast(field.type).to_pylist()[0]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise BadLookup(f"{field.name}={value!r} is not a {field.type}") from None


def parse_time(value: object) -> dt.datetime:
    """An ISO time from a request (UTC when it has no zone), or now when none is given.

    Raises:
        BadLookup: it is not an ISO 8601 time.
    """
    if value is None:
        return dt.datetime.now(dt.timezone.utc)
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise BadLookup(f"at={value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def parse_key(view: CompiledView, values: Mapping[str, str]) -> Key:
    """The view's key from request values (one per key column, as text).

    Raises:
        BadLookup: a key column is missing, unknown columns are given, or a value does not fit its column.
    """
    keys = list(view.spec.keys)
    missing = [k for k in keys if k not in values]
    extra = sorted(set(values) - set(keys))
    if missing or extra:
        raise BadLookup(f"view {view.name!r} is keyed by {keys}: give exactly those" + (f" (unknown: {extra})" if extra else ""))
    return tuple(_typed(values[k], view.state_schema.field(k)) for k in keys)


def probe_event(pipeline: PipelineConfig, key: str, fields: Mapping[str, str], at: dt.datetime) -> pa.Table:
    """One event of entity ``key`` at time ``at``: the fields given, the others missing (null).

    Raises:
        BadLookup: a field is unknown or its value does not fit its type.
    """
    ev = pipeline.events
    schema = pa.schema([f.with_nullable(True) for f in event_schema(ev)])  # a probe, not an ingested event: fields may be missing
    unknown = sorted(set(fields) - set(schema.names))
    if unknown:
        raise BadLookup(f"unknown event field(s) {unknown}; fields: {schema.names}")
    given = {**fields}
    values: dict[str, list[object]] = {}
    for f in schema:
        if f.name == ev.partition_key:
            values[f.name] = [_typed(key, f)]
        elif f.name == ev.time_column:
            values[f.name] = [at]
        elif f.name == ev.id_column:
            values[f.name] = [given.get(f.name, f"features:{key}")]
        else:
            values[f.name] = [_typed(given[f.name], f) if f.name in given else None]
    return pa.table(values, schema=schema)


def query_fields(pipeline: PipelineConfig, event: Mapping[str, object]) -> dict[str, str]:
    """An event as the query parameters of ``GET /features/{key}``: every field as text, its time as ``at``.

    The inverse of :func:`probe_event` and :func:`parse_time` (booleans as ``true``/``false``); the id and the
    partition key are left out (the key goes in the path).
    """
    ev = pipeline.events
    out = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in event.items() if k not in (ev.id_column, ev.partition_key)}
    out["at"] = out.pop(ev.time_column)
    return out


def freshness(snapshot: OnlineSnapshot) -> dict[str, dict[str, int | None]]:
    """Per view, the batch watermark W and the newest speed batch of the snapshot answered from."""
    return {"batch_watermark": dict(snapshot.watermarks), "freshest_ingest_seq": dict(snapshot.freshest)}


def prior_states(snapshot: OnlineSnapshot, features: FeatureFunction, events: pa.Table) -> dict[str, pa.Table]:
    """Per view that features read: the merged state rows of the view keys of ``events`` (each key once)."""
    names = sorted({f.view for f in features.pipeline.features if isinstance(f, ViewFeature)})
    out = {}
    for name in names:
        index = snapshot.views[name]
        keys = dict.fromkeys(zip(*(events.column(k).to_pylist() for k in index.view.spec.keys)))
        parts = [index.states(key) for key in keys]
        out[name] = pa.concat_tables(parts) if parts else index.view.state_schema.empty_table()
    return out


def feature_vectors(snapshot: OnlineSnapshot, features: FeatureFunction, events: pa.Table) -> pa.Table:
    """The feature vector of every event, as the speed layer would compute it with the snapshot's state.

    Several events are featurised like one micro-batch: an event sees the earlier events of its keys in the call.
    A feature from a view keyed by a field the event does not give (e.g. no merchant) is missing.
    """
    return features.compute(events, prior_states(snapshot, features, events))
