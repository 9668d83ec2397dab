"""Decoding and validating Kafka records against the declared schema.

Every record either becomes a row of a valid Arrow table or a :class:`Reject`
with a reason a person can act on. Nothing is dropped and nothing raises.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from lambdaflow.config import FieldSpec
from lambdaflow.schemas import fields_schema

_INT_BOUNDS = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


@dataclass(frozen=True)
class RawRecord:
    """A Kafka record as the speed layer received it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Reject:
    """A record that failed validation, and why."""

    record: RawRecord
    reason: str


class InvalidField(ValueError):
    """One field of a record is missing, mistyped or out of range."""


def _parse_timestamp(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise InvalidField(f"expected an ISO 8601 timestamp string, found {type(value).__name__}")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidField(f"expected an ISO 8601 timestamp, found {value[:40]!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)  # naive times are UTC by convention
    return parsed.astimezone(dt.timezone.utc)


def _check(name: str, spec: FieldSpec, value: Any) -> Any:
    """The value converted to its declared type, or InvalidField naming the field and the problem."""
    if value is None:
        if spec.nullable:
            return None
        raise InvalidField(f"field {name!r} is null but not nullable")
    kind = spec.type
    if kind == "string":
        if not isinstance(value, str):
            raise InvalidField(f"field {name!r}: expected a string, found {type(value).__name__}")
        if spec.max_length is not None and len(value) > spec.max_length:
            raise InvalidField(f"field {name!r}: {len(value)} characters, more than max_length {spec.max_length}")
        if spec.allowed is not None and value not in spec.allowed:
            raise InvalidField(f"field {name!r}: {value[:40]!r} is not one of {spec.allowed}")
        return value
    if kind in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise InvalidField(f"field {name!r}: expected an integer, found {type(value).__name__} {str(value)[:40]}")
        lo, hi = _INT_BOUNDS[kind]
        if not lo <= value <= hi:
            raise InvalidField(f"field {name!r}: {value} does not fit a {kind}")
    elif kind == "double":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidField(f"field {name!r}: expected a number, found {type(value).__name__} {str(value)[:40]}")
        value = float(value)
        if not math.isfinite(value):
            raise InvalidField(f"field {name!r}: {value} is not a finite number")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidField(f"field {name!r}: expected true or false, found {type(value).__name__}")
        return value
    elif kind == "timestamp":
        try:
            return _parse_timestamp(value)
        except InvalidField as exc:
            raise InvalidField(f"field {name!r}: {exc}") from None
    elif kind == "date":
        try:
            return dt.date.fromisoformat(value)
        except (TypeError, ValueError) as exc:
            raise InvalidField(f"field {name!r}: expected an ISO date, found {str(value)[:40]!r}") from exc
    if spec.min is not None and value < spec.min:
        raise InvalidField(f"field {name!r}: {value} is below min {spec.min:g}")
    if spec.max is not None and value > spec.max:
        raise InvalidField(f"field {name!r}: {value} is above max {spec.max:g}")
    return value


class Validator:
    """Validates JSON records of one declared schema.

    Args:
        fields: the declared fields.
        max_payload_bytes: larger records are rejected before decoding.
        extra_fields: ``"reject"`` unknown fields, or ``"ignore"`` them.
    """

    def __init__(self, fields: dict[str, FieldSpec], max_payload_bytes: int, extra_fields: str = "ignore") -> None:
        self.fields = fields
        self.schema = fields_schema(fields)
        self.max_payload_bytes = max_payload_bytes
        self.extra_fields = extra_fields

    def validate(self, records: Sequence[RawRecord]) -> tuple[pa.Table, list[RawRecord], list[Reject]]:
        """Split records into valid rows (in input order), the records they came from, and rejects."""
        columns: dict[str, list[Any]] = {name: [] for name in self.fields}
        accepted: list[RawRecord] = []
        rejects: list[Reject] = []
        for record in records:
            try:
                row = self._row(record)
            except InvalidField as exc:
                rejects.append(Reject(record, str(exc)))
                continue
            for name in self.fields:
                columns[name].append(row[name])
            accepted.append(record)
        table = pa.table({name: pa.array(values, self.schema.field(name).type) for name, values in columns.items()}, schema=self.schema)
        return table, accepted, rejects

    def _row(self, record: RawRecord) -> dict[str, Any]:
        raw = record.value
        if raw is None:
            raise InvalidField("empty record (null value)")
        if len(raw) > self.max_payload_bytes:
            raise InvalidField(f"oversized payload: {len(raw)} bytes, more than max_payload_bytes {self.max_payload_bytes}")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidField(f"undecodable: not UTF-8 JSON ({exc.__class__.__name__}: {str(exc)[:80]})") from None
        if not isinstance(data, dict):
            raise InvalidField(f"undecodable: expected a JSON object, found {type(data).__name__}")
        missing = [name for name in self.fields if name not in data and not self.fields[name].nullable]
        if missing:
            raise InvalidField(f"missing field(s) {missing}")
        if self.extra_fields == "reject":
            extra = sorted(set(data) - set(self.fields))
            if extra:
                raise InvalidField(f"unknown field(s) {extra}")
        return {name: _check(name, spec, data.get(name)) for name, spec in self.fields.items()}
