"""Cutting a CSV or JSON-lines file into records with their line numbers.

``pyarrow.csv.open_csv`` cannot say on which line a row was (``InvalidRow.number`` is ``None``
when streaming, blank lines vanish), so a replay cuts the file into records here and hands
Arrow one block of whole records at a time:

* :func:`regions` cuts a binary file into blocks of whole lines, skipping lines too long to hold;
* :func:`line_bounds` and :func:`strip_cr` find the lines of a block (``\\n`` or ``\\r\\n``);
* :func:`first_record_end` finds where the CSV header ends (it may hold quoted line breaks too);
* :func:`csv_records` joins lines into CSV records, quote-aware, so one stray quote costs one
  line rather than the rest of the file;
* :class:`Records` holds the byte ranges of the records of a block and their lines.

Everything here is vectorised with numpy over the bytes of a block: a Python loop per byte
or per line would be the bottleneck of a replay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

__all__ = ["BOM", "Records", "csv_records", "first_record_end", "line_bounds", "regions", "strip_cr"]

# bytes compared against the numpy view of a block
_NL, _CR, _QUOTE, _COMMA = 10, 13, 34, 44
#: The UTF-8 byte order mark some editors put at the start of a text file.
BOM = b"\xef\xbb\xbf"


@dataclass
class Records:
    """Records of one block of a CSV or JSON-lines file: byte ranges in ``data`` and their lines.

    Attributes:
        data: the bytes of the block.
        starts: the offset of each record in ``data``.
        ends: the offset just past each record, before its line break.
        lines: the line number of each record's first line.
        last_lines: the line number of each record's last line (a quoted CSV value may span several).
    """

    data: bytes
    starts: np.ndarray
    ends: np.ndarray
    lines: np.ndarray
    last_lines: np.ndarray

    def body(self, index: np.ndarray) -> bytes:
        """The records at ``index`` (increasing), each ending with a line break.

        (Arrow reads an empty last field as "" rather than null when no line break follows it.)

        Args:
            index: positions of the records wanted, increasing.

        Returns:
            The records as one byte string, ready for Arrow to parse.
        """
        # one slice instead of a join when the records lie next to each other in the block: the common case
        if len(index) and int(index[-1]) - int(index[0]) + 1 == len(index) and self._adjacent(index):
            return self.data[int(self.starts[index[0]]) : int(self.ends[index[-1]])] + b"\n"
        return b"".join(self.data[int(self.starts[i]) : int(self.ends[i])] + b"\n" for i in index)

    def _adjacent(self, index: np.ndarray) -> bool:
        """Whether the records follow each other with nothing but line breaks between them."""
        first, last = int(index[0]), int(index[-1])
        return int(self.last_lines[last] - self.lines[first] + 1) == int(
            np.sum(self.last_lines[first : last + 1] - self.lines[first : last + 1] + 1)
        )


def regions(
    f: BinaryIO, line: int, block_bytes: int, max_line: int, on_read: Callable[[int], None] | None
) -> Iterator[tuple[bytes, int, bool, list[int]]]:
    """Cut a binary file into regions of whole lines.

    Args:
        f: the file, positioned where the regions start.
        line: the number of the line at that position.
        block_bytes: bytes read at a time.
        max_line: a line longer than this is skipped (and reported) rather than held in memory.
        on_read: called with the bytes just read.

    Yields:
        (region, number of its first line, whether it is the end of the file, lines skipped before it for being
        longer than ``max_line`` bytes). A region ends with a line break, except at the end of the file.
    """
    tail = b""
    skipping: int | None = None  # the line being skipped for its length
    too_long: list[int] = []
    while True:
        block = f.read(block_bytes)
        eof = not block
        if block and on_read:
            on_read(len(block))
        if skipping is not None:
            cut = block.find(b"\n")
            if cut < 0 and not eof:
                continue
            too_long.append(skipping)
            skipping, block = None, (b"" if cut < 0 else block[cut + 1 :])
            line += 1
        data = tail + block if tail else block
        cut = len(data) if eof else data.rfind(b"\n") + 1
        if not cut and not eof:
            if len(data) > max_line:
                skipping, tail = line, b""
            else:
                tail = data
            continue
        region, tail = data[:cut], data[cut:]
        yield region, line, eof, too_long
        too_long = []
        line += region.count(b"\n")
        if eof:
            return


def line_bounds(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bytes as an array, and the start and end (before the line break) of each of its lines.

    Args:
        data: a region of whole lines.

    Returns:
        (the bytes as ``uint8``, start offsets, end offsets); no line is counted after a final line break.
    """
    arr = np.frombuffer(data, np.uint8)
    nl = np.flatnonzero(arr == _NL)
    starts = np.concatenate(([0], nl + 1)).astype(np.int64)
    ends = np.concatenate((nl, [len(data)])).astype(np.int64)
    if len(starts) and starts[-1] == len(data):  # nothing after the last line break
        starts, ends = starts[:-1], ends[:-1]
    return arr, starts, ends


def strip_cr(arr: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Ends without a trailing carriage return (CRLF files).

    Args:
        arr: the bytes of the region.
        starts: start offsets of its lines.
        ends: end offsets of its lines, before the ``\\n``.

    Returns:
        The end offsets, one less where a line ends with ``\\r``.
    """
    if not len(ends):
        return ends
    cr = (ends > starts) & (arr[np.maximum(ends - 1, 0)] == _CR)
    return ends - cr


def first_record_end(data: bytes) -> int | None:
    """Where the first CSV record of ``data`` ends: its first line break outside quotes.

    Args:
        data: the start of a CSV file.

    Returns:
        The offset of that line break, or None when ``data`` holds none (the record goes on past it).
    """
    arr = np.frombuffer(data, np.uint8)
    nl = np.flatnonzero(arr == _NL)
    quotes = np.cumsum(arr == _QUOTE)
    closed = nl[(quotes[nl] & 1) == 0]
    return int(closed[0]) if len(closed) else None


def csv_records(data: bytes, line: int, ncols: int, final: bool, max_record: int) -> tuple[Records, list[tuple[int, int, str]], int]:
    """Cut whole lines into CSV records, quote-aware.

    A line with an odd number of quotes opens a quoted value that a later such line closes; the two and the lines
    between are one record if together they have ``ncols`` fields. Otherwise the line is bad on its own (a quote
    not closed, or a stray quote in an unquoted field) and the lines after it are read as usual, so one stray
    quote costs one line, not the rest of the file.

    Args:
        data: a region of whole lines.
        line: the number of its first line.
        ncols: the number of fields of the header.
        final: whether the region ends the file (an open quote cannot be closed by a later region).
        max_record: a record longer than this is not waited for.

    Returns:
        The records (blank lines left out), bad lines as (first line, last line, reason), and the offset from which
        the data is an unfinished record to read again with the next region (``len(data)`` if none).
    """
    arr, starts, ends = line_bounds(data)
    n = len(starts)
    quotes = np.concatenate(([0], np.cumsum(arr == _QUOTE, dtype=np.int64)))
    odd = ((quotes[ends] - quotes[starts]) & 1).astype(bool)
    commas = np.flatnonzero(arr == _COMMA)
    line_of = np.searchsorted(ends, commas)  # a comma is never a line break, so this is its line
    unquoted = ((quotes[commas] - quotes[starts[line_of]]) & 1) == 0
    fields = np.bincount(line_of[unquoted], minlength=n) + 1

    def fields_between(a: int, b: int) -> int:
        inside = commas[np.searchsorted(commas, a) : np.searchsorted(commas, b)]
        return int(np.count_nonzero(((quotes[inside] - quotes[a]) & 1) == 0)) + 1

    single = ~odd
    merged: list[tuple[int, int, int]] = []
    bad: list[tuple[int, int, str]] = []
    carry_from = n
    opening = np.flatnonzero(odd).tolist()
    k = 0
    while k < len(opening):
        i = opening[k]
        if k + 1 < len(opening):
            j = opening[k + 1]
            if ends[j] - starts[i] <= max_record:
                count = fields_between(int(starts[i]), int(ends[j]))
                if count == ncols:
                    merged.append((i, j, count))
                    single[i : j + 1] = False
                    k += 2
                    continue
        elif not final and len(data) - starts[i] <= max_record:
            carry_from = i  # its closing quote may be in the next region
            break
        bad.append((line + i, line + i, "a quoted value is not closed (or a stray '\"' in an unquoted field)"))
        k += 1
    single[carry_from:] = False
    one = np.flatnonzero(single)
    first = np.concatenate((one, np.array([m[0] for m in merged], np.int64))).astype(np.int64)
    last = np.concatenate((one, np.array([m[1] for m in merged], np.int64))).astype(np.int64)
    counts = np.concatenate((fields[one], np.array([m[2] for m in merged], np.int64)))
    order = np.argsort(first, kind="stable")
    first, last, counts = first[order], last[order], counts[order]
    rec_starts, rec_ends = starts[first], strip_cr(arr, starts[first], ends[last])
    filled = rec_ends > rec_starts  # blank lines carry nothing: left out, not reported
    wrong = filled & (counts != ncols)
    bad += [(line + int(a), line + int(b), f"{c} fields, expected {ncols}") for a, b, c in zip(first[wrong], last[wrong], counts[wrong])]
    keep = filled & ~wrong
    records = Records(data, rec_starts[keep], rec_ends[keep], line + first[keep], line + last[keep])
    offset = int(starts[carry_from]) if carry_from < n else len(data)
    return records, sorted(bad), offset
