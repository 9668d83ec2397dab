"""Validation in bulk: a batch's plain records decoded by orjson and checked a column at a time.

The rules are those of :mod:`lambdaflow.validation`, and so are the values: this module only decides
faster that a record passes them. A record it is not sure of is left to the row-by-row path, which gives
the reason when it fails:

* a record with a backslash (an escape in a string) or a nested value, one that orjson refuses, or one
  that is missing a required field or (with ``extra_fields: reject``) has an unknown one;
* every record of the batch when one column fails a check, so the row path names the culprit.

Duplicate keys (rejected by the rules; orjson silently keeps the last copy) are ruled out by counting: in a
text without escapes every ``"`` delimits a key or a string value, so a flat object with k keys, s of them
holding strings, has exactly 2(k + s) quotes unless a key appears twice.

The row path decoded and checked a sample event in 16 µs; this path takes about a third of that
(``bench/speed.py`` reports the validate stage per record).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from lambdaflow.config import FieldSpec
    from lambdaflow.validation import RawRecord, Validator, _Window

__all__ = ["bulk_columns"]

_BOM = b"\xef\xbb\xbf"
_QUOTE = b'"'
_NONE = type(None)
_INT_BOUNDS = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


class _Unsure(Exception):
    """A column check failed: leave the batch to the row-by-row path."""


def _plain_object(raw: bytes | None, validator: Validator, required: frozenset[str], known: frozenset[str] | None) -> dict[str, Any] | None:
    """The flat JSON object of a record without escapes, or None when the row path must decide."""
    if raw is None or len(raw) > validator.max_payload_bytes or b"\\" in raw:
        return None
    body = raw[3:] if raw.startswith(_BOM) else raw
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict:
        return None
    kinds = list(map(type, data.values()))
    if dict in kinds or list in kinds:
        return None
    if body.count(_QUOTE) != 2 * (len(data) + kinds.count(str)):  # a duplicate key (see the module docstring)
        return None
    keys = data.keys()
    if not required <= keys or (known is not None and not keys <= known):
        return None
    return data


def _present(values: list[Any], spec: FieldSpec, allowed_types: tuple[type, ...]) -> list[Any]:
    """The non-null values, once every value is of one of the allowed types (null only where nullable)."""
    kinds = set(map(type, values))
    if _NONE in kinds:
        if not spec.nullable:
            raise _Unsure
        kinds.discard(_NONE)
        values = [v for v in values if v is not None]
    if not kinds <= set(allowed_types):
        raise _Unsure
    return values


def _bounded(values: list[Any], spec: FieldSpec, lo: float = -math.inf, hi: float = math.inf) -> None:
    if values:
        smallest, largest = min(values), max(values)
        if smallest < lo or largest > hi:
            raise _Unsure
        if (spec.min is not None and smallest < spec.min) or (spec.max is not None and largest > spec.max):
            raise _Unsure


def _string(values: list[Any], spec: FieldSpec) -> list[Any]:
    present = _present(values, spec, (str,))
    if spec.max_length is not None and max(map(len, present), default=0) > spec.max_length:
        raise _Unsure
    if spec.allowed is not None and not set(present) <= set(spec.allowed):
        raise _Unsure
    if not all(map(str.isascii, present)):
        for text in present:
            text.encode("utf-8")  # a lone surrogate raises: the row path names it
    return values


def _integer(values: list[Any], spec: FieldSpec) -> list[Any]:
    _bounded(_present(values, spec, (int,)), spec, *_INT_BOUNDS[spec.type])
    return values


def _double(values: list[Any], spec: FieldSpec) -> list[Any]:
    present = _present(values, spec, (float, int))
    if any(type(v) is int for v in present):
        values = [v if v is None else float(v) for v in values]  # a too large integer raises OverflowError
        present = [v for v in values if v is not None]
    if not all(map(math.isfinite, present)):
        raise _Unsure
    _bounded(present, spec)
    return values


def _boolean(values: list[Any], spec: FieldSpec) -> list[Any]:
    _present(values, spec, (bool,))
    return values


def _one_by_one(name: str, spec: FieldSpec) -> Callable[[list[Any], FieldSpec], list[Any]]:
    """Times and dates: the row path's own check on each value (parsing has no bulk form worth having)."""
    from lambdaflow import validation

    def check(values: list[Any], _: FieldSpec) -> list[Any]:
        return [validation._check(name, spec, v) for v in values]

    return check


_CHECKS: dict[str, Callable[[list[Any], FieldSpec], list[Any]]] = {
    "string": _string,
    "int": _integer,
    "long": _integer,
    "double": _double,
    "boolean": _boolean,
}


def bulk_columns(validator: Validator, records: Sequence[RawRecord], window: _Window | None) -> tuple[list[int], dict[str, list[Any]]]:
    """The records this path accepts, by index, and their converted values column by column.

    Every other record is the row path's to accept or reject. When a column check fails, no record is
    accepted here.
    """
    fields = validator.fields
    required = frozenset(name for name, spec in fields.items() if not spec.nullable)
    known = frozenset(fields) if validator.extra_fields == "reject" else None
    indices: list[int] = []
    objects: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        data = _plain_object(record.value, validator, required, known)
        if data is not None:
            indices.append(i)
            objects.append(data)
    if not objects:
        return [], {}
    try:
        columns = {
            name: _CHECKS.get(spec.type, _one_by_one(name, spec))([d.get(name) for d in objects], spec) for name, spec in fields.items()
        }
        if window is not None:
            times = [t for t in columns[window.column] if t is not None]
            if times and (min(times) < window.earliest or max(times) > window.latest):
                raise _Unsure
    except (_Unsure, ValueError, TypeError, OverflowError, UnicodeError):  # InvalidField is a ValueError
        return [], {}
    return indices, columns
