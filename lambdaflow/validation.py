"""Decoding and validating Kafka records against the declared schema.

Every record either becomes a row of a valid Arrow table or a :class:`Reject`
with a reason a person can act on. Nothing is dropped and nothing raises: not on
bytes that are not UTF-8, not on values Python or Arrow cannot hold (a lone
surrogate, an integer of thousands of digits, nesting deeper than the recursion
limit, a time that leaves the calendar when converted to UTC). A value reaches
Arrow only once it is known to convert, so one poison record never costs the
rest of its batch its place; the speed layer quarantines the rejects and moves
on, and the REST API answers 422 instead of 500.

Choices where JSON parsers disagree (so every reader of an event sees the same
values):

* the text must be UTF-8 (RFC 8259 §8.1); one leading byte-order mark is
  ignored, as RFC 8259 allows. UTF-16/32 and encoded surrogates are rejected.
* ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON: the record is rejected,
  wherever they stand.
* duplicate keys are rejected (RFC 7493 §2.3): Python keeps the last copy, other
  parsers the first, so the same bytes would mean two different events.
* a timestamp without an offset is UTC by convention; one with an offset is
  converted to UTC.
* strings are kept exactly, including NUL, BOM and bidirectional controls: they
  are valid text; ``max_length`` and ``allowed`` bound what a field may hold.

The event-time window (``events.max_future`` / ``events.max_age``) rejects an
event whose time lies too far from its ingest time (an event dated 2099 or 1970
would distort every view and the training set).

Long because each kind of poison has its guard and its reason next to the rule it protects.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from lambdaflow.bulk_validation import bulk_columns
from lambdaflow.config import EventsSpec, FieldSpec
from lambdaflow.schemas import fields_schema

_INT_BOUNDS = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_UTC = dt.timezone.utc
_EARLIEST = dt.datetime.min.replace(tzinfo=_UTC)
_LATEST = dt.datetime.max.replace(tzinfo=_UTC)
#: A UTF-8 byte-order mark, ignored at the start of a record.
_BOM = b"\xef\xbb\xbf"
#: Longest reason stored with a reject.
_MAX_REASON = 500


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
    """One field of a record is missing, mistyped or out of range, or the record is not JSON."""


def _show(value: Any) -> str:
    """A short, always printable and UTF-8-safe picture of a decoded JSON value, for a reason."""
    if isinstance(value, str):
        return repr(value[:40]) + ("…" if len(value) > 40 else "")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    return type(value).__name__  # a list or an object: never repr it (it may be nested hundreds deep)


def _found(value: Any) -> str:
    return type(value).__name__ if isinstance(value, (list, dict)) else f"{type(value).__name__} {_show(value)}"


def _storable(reason: str) -> str:
    """The reason as text the quarantine table can store (UTF-8, bounded length)."""
    text = reason.encode("utf-8", "backslashreplace").decode("utf-8") or "rejected"
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def _failure(what: str, exc: BaseException) -> str:
    """A reason for an error no check foresaw (never raises itself)."""
    try:
        detail = str(exc)[:200]
    except Exception:  # noqa: BLE001 - an exception whose message cannot be built still gets a reason
        detail = "(no message)"
    return _storable(f"{what}: {type(exc).__name__}: {detail}")


def _duration_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _no_constant(name: str) -> Any:
    raise InvalidField(f"undecodable: {name} is not a JSON number (RFC 8259)")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidField(f"undecodable: duplicate key {_show(key)} in a JSON object (parsers disagree on which copy wins)")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_no_constant)


def _decode(raw: bytes) -> Any:
    """The JSON value of a record, or InvalidField saying why it is not one."""
    try:
        text = (raw[3:] if raw.startswith(_BOM) else raw).decode()  # strict UTF-8 (not the slower "utf-8-sig" codec)
    except UnicodeDecodeError as exc:
        raise InvalidField(f"undecodable: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return _DECODER.decode(text)
    except InvalidField:
        raise
    except RecursionError:
        raise InvalidField("undecodable: JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidField(f"undecodable: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:  # the interpreter's limit on integer digits
        if "integer string conversion" in str(exc):
            raise InvalidField(f"undecodable: an integer of more than {sys.get_int_max_str_digits()} digits") from None
        raise InvalidField(f"undecodable: {str(exc)[:80]}") from None


def _utf8(name: str, value: str) -> str:
    """The (non-ASCII) string, or InvalidField if it holds a lone surrogate (JSON allows ``"\\ud800"``, UTF-8 and Arrow do not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = ord(value[exc.start])
        raise InvalidField(f"field {name!r}: lone surrogate U+{bad:04X} at character {exc.start} is not valid Unicode text") from None
    return value


def _parse_timestamp(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise InvalidField(f"expected an ISO 8601 timestamp string, found {type(value).__name__}")
    try:
        if "\x00" in value:  # fromisoformat stops reading at a trailing NUL
            raise ValueError("NUL character")
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidField(f"expected an ISO 8601 timestamp, found {_show(value)}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=_UTC)  # naive times are UTC by convention
    try:
        return parsed.astimezone(_UTC)
    except OverflowError:
        raise InvalidField(f"{_show(value)} is out of range (before year 1 or after 9999 in UTC)") from None


def _check(name: str, spec: FieldSpec, value: Any) -> Any:
    """The value converted to its declared type, or InvalidField naming the field and the problem.

    The result always converts to the field's Arrow type.
    """
    if value is None:
        if spec.nullable:
            return None
        raise InvalidField(f"field {name!r} is null but not nullable")
    kind = spec.type
    if kind == "string":
        if not isinstance(value, str):
            raise InvalidField(f"field {name!r}: expected a string, found {_found(value)}")
        if spec.max_length is not None and len(value) > spec.max_length:
            raise InvalidField(f"field {name!r}: {len(value)} characters, more than max_length {spec.max_length}")
        if spec.allowed is not None and value not in spec.allowed:
            raise InvalidField(f"field {name!r}: {_show(value)} is not one of {spec.allowed}")
        return value if value.isascii() else _utf8(name, value)
    if kind in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise InvalidField(f"field {name!r}: expected an integer, found {_found(value)}")
        lo, hi = _INT_BOUNDS[kind]
        if not lo <= value <= hi:
            raise InvalidField(f"field {name!r}: {_show(value)} does not fit a {kind}")
    elif kind == "double":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidField(f"field {name!r}: expected a number, found {_found(value)}")
        try:
            value = float(value)
        except OverflowError:
            raise InvalidField(f"field {name!r}: {_show(value)} is too large for a double") from None
        if not math.isfinite(value):
            raise InvalidField(f"field {name!r}: {value} is not a finite number")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidField(f"field {name!r}: expected true or false, found {_found(value)}")
        return value
    elif kind == "timestamp":
        try:
            return _parse_timestamp(value)
        except InvalidField as exc:
            raise InvalidField(f"field {name!r}: {exc}") from None
    elif kind == "date":
        try:
            if not isinstance(value, str) or "\x00" in value:
                raise ValueError(value)
            return dt.date.fromisoformat(value)
        except ValueError:
            raise InvalidField(f"field {name!r}: expected an ISO date, found {_found(value)}") from None
    if spec.min is not None and value < spec.min:
        raise InvalidField(f"field {name!r}: {value} is below min {spec.min:g}")
    if spec.max is not None and value > spec.max:
        raise InvalidField(f"field {name!r}: {value} is above max {spec.max:g}")
    return value


@dataclass(frozen=True)
class _Window:
    """The accepted event times of one call: ``[earliest, latest]``, and how to say so."""

    column: str
    earliest: dt.datetime
    latest: dt.datetime
    text: str


class Validator:
    """Validates JSON records of one declared schema.

    Args:
        fields: the declared fields.
        max_payload_bytes: larger records are rejected before decoding.
        extra_fields: ``"reject"`` unknown fields, or ``"ignore"`` them.
        time_column: the timestamp field the event-time window applies to; None: no window.
        max_future: seconds an event may lie after its ingest time; None: no upper bound.
        max_age: seconds an event may lie before its ingest time; None: no lower bound.

    Raises:
        ValueError: the window names no timestamp field, or a bound is negative.
    """

    def __init__(
        self,
        fields: dict[str, FieldSpec],
        max_payload_bytes: int,
        extra_fields: str = "ignore",
        *,
        time_column: str | None = None,
        max_future: int | None = None,
        max_age: int | None = None,
    ) -> None:
        if time_column is not None and (time_column not in fields or fields[time_column].type != "timestamp"):
            raise ValueError(f"time_column {time_column!r} is not a timestamp field of {sorted(fields)}")
        if time_column is None and (max_future is not None or max_age is not None):
            raise ValueError("an event-time window (max_future / max_age) needs a time_column")
        if any(bound is not None and bound < 0 for bound in (max_future, max_age)):
            raise ValueError(f"max_future and max_age must not be negative, found {max_future} and {max_age}")
        self.fields = fields
        self.schema = fields_schema(fields)
        self.max_payload_bytes = max_payload_bytes
        self.extra_fields = extra_fields
        self.time_column = time_column
        self.max_future = max_future
        self.max_age = max_age

    @classmethod
    def for_events(cls, events: EventsSpec, max_payload_bytes: int) -> Validator:
        """The validator of a pipeline's events: its event-time window, and its rule for null partition keys."""
        fields = dict(events.fields)
        if events.null_keys == "quarantine":  # a null key is then a reject like any null in a non-nullable field
            fields[events.partition_key] = fields[events.partition_key].model_copy(update={"nullable": False})
        return cls(fields, max_payload_bytes, time_column=events.time_column, max_future=events.max_future, max_age=events.max_age)

    def validate(self, records: Sequence[RawRecord], now: dt.datetime | None = None) -> tuple[pa.Table, list[RawRecord], list[Reject]]:
        """Split records into valid rows (in input order), the records they came from, and rejects.

        Never raises on the content of a record.

        Args:
            records: the records to validate.
            now: the ingest time the event-time window is relative to (default: the current UTC time;
                a naive time is taken as UTC).
        """
        window = self._window(now)
        try:  # the common case in bulk, with the same rules and values; the rest row by row
            fast, fast_columns = bulk_columns(self, records, window)
        except Exception:  # noqa: BLE001 - a flaw in the bulk path must not cost a record: the row path decides
            fast, fast_columns = [], {}
        if records and len(fast) == len(records):
            return self._table_or_rows(records, fast_columns, list(records), [])
        columns: dict[str, list[Any]] = {name: [] for name in self.fields}
        accepted: list[RawRecord] = []
        rejects: list[Reject] = []
        position = dict(zip(fast, range(len(fast)), strict=True))
        for i, record in enumerate(records):
            if i in position:
                for name in self.fields:
                    columns[name].append(fast_columns[name][position[i]])
                accepted.append(record)
                continue
            try:
                row = self._row(record, window)
            except InvalidField as exc:
                rejects.append(Reject(record, _storable(str(exc))))
                continue
            except Exception as exc:  # noqa: BLE001 - the last line of defence: a record must never stop the batch
                rejects.append(Reject(record, _failure("could not be validated", exc)))
                continue
            for name in self.fields:
                columns[name].append(row[name])
            accepted.append(record)
        return self._table_or_rows(records, columns, accepted, rejects)

    def _table_or_rows(
        self, records: Sequence[RawRecord], columns: dict[str, list[Any]], accepted: list[RawRecord], rejects: list[Reject]
    ) -> tuple[pa.Table, list[RawRecord], list[Reject]]:
        try:
            return self._table(columns), accepted, rejects
        except Exception:  # noqa: BLE001 - every value was checked; should Arrow still refuse one, find it row by row
            return self._row_by_row(records, columns, accepted, rejects)

    def _table(self, columns: dict[str, list[Any]]) -> pa.Table:
        return pa.table({name: pa.array(values, self.schema.field(name).type) for name, values in columns.items()}, schema=self.schema)

    def _row_by_row(
        self, records: Sequence[RawRecord], columns: dict[str, list[Any]], accepted: list[RawRecord], rejects: list[Reject]
    ) -> tuple[pa.Table, list[RawRecord], list[Reject]]:
        """Build the table from the rows Arrow takes one by one; the others become rejects (in input order)."""
        kept: dict[str, list[Any]] = {name: [] for name in self.fields}
        kept_records: list[RawRecord] = []
        for i, record in enumerate(accepted):
            row = {name: values[i : i + 1] for name, values in columns.items()}
            try:
                self._table(row)
            except Exception as exc:  # noqa: BLE001 - this row, and only it, is rejected
                rejects.append(Reject(record, _failure("could not be stored", exc)))
                continue
            for name, values in row.items():
                kept[name] += values
            kept_records.append(record)
        position = {id(record): i for i, record in enumerate(records)}
        try:
            table = self._table(kept)
        except Exception as exc:  # noqa: BLE001 - rows Arrow took one by one but not together: none is trusted
            rejects += [Reject(record, _failure("could not be stored", exc)) for record in kept_records]
            table, kept_records = self.schema.empty_table(), []
        rejects.sort(key=lambda reject: position.get(id(reject.record), -1))
        return table, kept_records, rejects

    def _window(self, now: dt.datetime | None) -> _Window | None:
        if self.time_column is None:
            return None
        if now is None:
            now = dt.datetime.now(_UTC)
        elif now.tzinfo is None:
            now = now.replace(tzinfo=_UTC)
        earliest, latest = _EARLIEST, _LATEST  # a bound beyond the calendar accepts everything on that side
        if self.max_age is not None:
            try:
                earliest = now - dt.timedelta(seconds=self.max_age)
            except OverflowError:
                pass
        if self.max_future is not None:
            try:
                latest = now + dt.timedelta(seconds=self.max_future)
            except OverflowError:
                pass
        age = "no max_age" if self.max_age is None else f"- max_age {_duration_text(self.max_age)}"
        future = "no max_future" if self.max_future is None else f"+ max_future {_duration_text(self.max_future)}"
        text = (
            f"the accepted event-time window [{earliest.isoformat()}, {latest.isoformat()}] (ingest time {now.isoformat()} {age}, {future})"
        )
        return _Window(self.time_column, earliest, latest, text)

    def _row(self, record: RawRecord, window: _Window | None) -> dict[str, Any]:
        raw = record.value
        if raw is None:
            raise InvalidField("empty record (null value)")
        if len(raw) > self.max_payload_bytes:
            raise InvalidField(f"oversized payload: {len(raw)} bytes, more than max_payload_bytes {self.max_payload_bytes}")
        data = _decode(raw)
        if not isinstance(data, dict):
            raise InvalidField(f"undecodable: expected a JSON object, found {type(data).__name__}")
        missing = [name for name in self.fields if name not in data and not self.fields[name].nullable]
        if missing:
            raise InvalidField(f"missing field(s) {missing}")
        if self.extra_fields == "reject":
            extra = sorted(set(data) - set(self.fields))
            if extra:
                raise InvalidField(f"unknown field(s) {extra[:10]}" + (f" and {len(extra) - 10} more" if len(extra) > 10 else ""))
        row = {name: _check(name, spec, data.get(name)) for name, spec in self.fields.items()}
        if window is not None:
            when = row[window.column]
            if when is not None and not window.earliest <= when <= window.latest:
                raise InvalidField(f"field {window.column!r}: {when.isoformat()} is outside {window.text}")
        return row
