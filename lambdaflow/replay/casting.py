"""Turning the values read from a file into the types the pipeline declares, and saying why one does not fit.

A replay never lets Arrow guess a type from the data (a CSV ``00123`` in a string field must stay
``"00123"``): every column is read as bytes or strings and cast here to its declared type.

* :func:`cast_column` casts one column; times are ISO 8601 strings, and one without a zone is a UTC
  wall time, as the speed layer reads it.
* :func:`bad_values` finds, when a cast fails, which values did not fit and why, so that only their
  lines are skipped.
* :class:`DeclaredColumns` types a whole table read from a file: the rows whose values all fit, and a
  :class:`~lambdaflow.replay.BadLine` for each of the others.
* :func:`arrow_reason` turns an Arrow error into the short reason a :class:`~lambdaflow.replay.BadLine` carries.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.config import FieldSpec
from lambdaflow.errors import InputFileError
from lambdaflow.replay.results import BadLine

__all__ = ["DeclaredColumns", "arrow_reason", "bad_values", "cast_column", "parse_times"]

#: A time followed by a zone (``Z``, ``+02:00``, ``-0500``): such strings are instants, others are UTC wall times.
_ZONED = r"\d:\d{2}(:\d{2}(\.\d*)?)?\s*([Zz]|[+-]\d{2}(:?\d{2})?)$"
_TS = pa.timestamp("us", tz="UTC")


def arrow_reason(exc: BaseException) -> str:
    """The first line of an Arrow error, without Arrow's own row numbers (the caller knows the line).

    Args:
        exc: the error Arrow raised while parsing or casting.

    Returns:
        One line of at most 200 characters, in the pipeline's words where Arrow's are obscure.
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r" in row \d+$", "", text).removeprefix("JSON parse error: ")
    changed = re.fullmatch(r"Column\(/?(.*)\) changed from (\w+) to (\w+)", text)
    if changed:  # Arrow's words for a JSON value of another type than the declared one
        name, declared, found = changed.groups()
        text = (
            f"field {name!r}: found a JSON {found} where the pipeline declares a {declared}" if name else f"a JSON {found}, not an object"
        )
    return text if len(text) <= 200 else text[:197] + "..."


def parse_times(column: pa.Array) -> pa.Array:
    """ISO 8601 strings as UTC instants; a string without a zone is a UTC wall time (as the speed layer reads it).

    Args:
        column: strings.

    Returns:
        ``timestamp[us, UTC]`` values.

    Raises:
        pa.ArrowInvalid: a string is not an ISO 8601 time.
    """
    zoned = pc.fill_null(pc.match_substring_regex(column, _ZONED), False)
    none = pa.scalar(None, column.type)
    # Arrow casts a zoned string to its instant but refuses a zone-less one as a zoned timestamp:
    # the two kinds are cast apart, the zone-less ones as wall times taken to be UTC
    aware = pc.cast(pc.if_else(zoned, column, none), _TS)
    naive = pc.cast(pc.cast(pc.if_else(zoned, none, column), pa.timestamp("us")), _TS)
    return pc.if_else(zoned, aware, naive)


def cast_column(column: pa.Array, target: pa.DataType) -> pa.Array:
    """A column as its declared type.

    Args:
        column: values as read (bytes from CSV, strings or numbers from JSON, any type from Parquet).
        target: the declared type (:func:`lambdaflow.schemas.arrow_type` of the field).

    Returns:
        The column as ``target``.

    Raises:
        pa.ArrowInvalid: some value does not fit (found per value by :func:`bad_values`).
        pa.ArrowNotImplementedError: no value of this type can be read as the declared type.
    """
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if column.type == target:
        return column
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        column = pc.cast(column, pa.string())  # fails on bytes that are not UTF-8
    if pa.types.is_timestamp(target):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            return parse_times(column)
        if pa.types.is_timestamp(column.type):  # another unit or zone: the same instants, to the microsecond
            return pc.cast(column, target, safe=False)
    return pc.cast(column, target)


def bad_values(column: pa.Array, target: pa.DataType) -> dict[int, str]:
    """Positions of the values of ``column`` that do not fit ``target``, and why (bisection: a few casts per bad value).

    Args:
        column: values as read, of which :func:`cast_column` failed on some.
        target: the declared type.

    Returns:
        Position in ``column`` → the reason its value does not fit.
    """
    bad: dict[int, str] = {}
    todo = [(0, len(column))]
    while todo:
        start, length = todo.pop()
        try:
            cast_column(column.slice(start, length), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            if length == 1:
                bad[start] = arrow_reason(exc)
            else:
                half = length // 2
                todo += [(start + half, length - half), (start, half)]
    return bad


class DeclaredColumns:
    """The declared columns a file has, and how a table read from it becomes typed rows.

    Args:
        path: the file (named by the bad lines).
        fields: the declared fields of the stream.
        types: the Arrow type of every declared field.
        columns: the declared fields the file has, in declaration order.
        unit: what a bad line of this file counts: lines of a text file or rows of a Parquet file.

    Attributes:
        schema: the columns with their declared types, all nullable (a missing value is a null).
    """

    def __init__(
        self, path: Path, fields: dict[str, FieldSpec], types: dict[str, pa.DataType], columns: list[str], unit: Literal["line", "row"]
    ) -> None:
        self.path, self.fields, self.types, self.columns, self.unit = path, fields, types, columns, unit
        self.schema = pa.schema([pa.field(n, types[n], True) for n in columns])

    def empty(self) -> pa.Table:
        """No rows, with the schema every chunk has."""
        return self.schema.empty_table()

    def typed(self, table: pa.Table, lines: np.ndarray, last_lines: np.ndarray) -> tuple[pa.Table, np.ndarray, list[BadLine]]:
        """The declared columns cast to their declared types; rows with a value that does not fit become bad lines.

        Args:
            table: the declared columns as read.
            lines: the (first) line of each row.
            last_lines: the last line of each row (a CSV record may span several).

        Returns:
            The typed rows that fit, their lines, and a bad line per row that does not.

        Raises:
            InputFileError: a column holds a type that can never be read as the declared one (e.g. a Parquet list).
        """
        reasons: dict[int, str] = {}
        typed: dict[str, pa.Array | None] = {}
        for name in self.columns:
            column = table.column(name).combine_chunks()
            try:
                typed[name] = cast_column(column, self.types[name])
            except (pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise InputFileError(
                    f"{self.path}: column {name!r} holds {column.type}, which cannot be read as the declared {self.fields[name].type}: {arrow_reason(exc)}"
                ) from exc
            except pa.ArrowInvalid:
                # some values do not fit: find which (a column that fits whole is cast once, not value by value)
                typed[name] = None
                for i, why in bad_values(column, self.types[name]).items():
                    reasons.setdefault(i, f"field {name!r}: {why}")
        bad = [BadLine(self.path, int(lines[i]), why, int(last_lines[i]), self.unit) for i, why in sorted(reasons.items())]
        if reasons:
            keep = np.ones(table.num_rows, bool)
            keep[list(reasons)] = False
            mask = pa.array(keep)
            for name in self.columns:
                done = typed[name]
                typed[name] = (
                    done.filter(mask)
                    if done is not None
                    else cast_column(table.column(name).combine_chunks().filter(mask), self.types[name])
                )
            lines = lines[keep]
        return pa.table(typed, schema=self.schema), lines, bad
