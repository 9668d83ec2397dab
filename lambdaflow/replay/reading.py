"""Reading a replayed file as the pipeline declares it: :class:`FileReader`.

CSV, JSON lines and Parquet are read in chunks (bounded memory), typed as the stream's declared
fields, with the line (Parquet: row) number of every row kept for the time sort and for reporting.
A line that cannot be read or typed becomes a :class:`~lambdaflow.replay.BadLine` and the rest goes
on; only a file that cannot be read at all raises :class:`~lambdaflow.errors.InputFileError`.

How each format is read:

* **CSV**: cut into records here (:mod:`lambdaflow.replay.records`, which knows the line numbers that
  Arrow's streaming reader loses), then each block parsed by Arrow with every column as bytes and cast
  to its declared type (:mod:`lambdaflow.replay.casting`). If Arrow cuts a block differently than the
  records say, it is parsed record by record, so the disagreement costs only the records concerned.
* **JSON lines**: each block parsed by Arrow against the declared schema (times and dates as strings,
  then parsed as CSV values are); where a block fails, it is halved until the bad lines are found.
* **Parquet**: read per row group in batches; a damaged row group is reported as one span of rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pyarrow as pa

from lambdaflow.config import FieldSpec
from lambdaflow.errors import InputFileError
from lambdaflow.replay.casting import DeclaredColumns, arrow_reason
from lambdaflow.replay.formats import replay_path
from lambdaflow.replay.records import BOM, Records, csv_records, first_record_end, line_bounds, regions, strip_cr
from lambdaflow.replay.results import BadLine, Chunk, ReadReport
from lambdaflow.schemas import arrow_type

__all__ = ["BATCH_ROWS", "BLOCK_BYTES", "MAX_RECORD_BYTES", "FileReader"]

#: Bytes of a CSV or JSON-lines file read per block.
BLOCK_BYTES = 4 << 20
#: Rows of a Parquet file read per batch.
BATCH_ROWS = 65_536
#: A record (a line, or a CSV record over several lines) longer than this is skipped as a bad line.
MAX_RECORD_BYTES = 1 << 20

#: What a format's reader yields per block: typed rows, their line numbers, the lines skipped.
_Part: TypeAlias = tuple[pa.Table, np.ndarray, list[BadLine]]


class FileReader:
    """Reads a CSV, JSON-lines or Parquet file in chunks, typed as the pipeline declares (see :mod:`lambdaflow.replay`).

    Args:
        path: the file; its extension says its format.
        fields: the declared fields of the stream replayed (``pipeline.events.fields`` or ``pipeline.labels.fields``).
        block_bytes: bytes of CSV / JSON lines read per block.
        batch_rows: rows of Parquet read per batch.
        max_record_bytes: longer records are skipped as bad lines.
        on_bad: called with every line skipped, in file order.

    Attributes:
        report: what has been read and skipped so far.
        columns: the declared columns the file has, in declaration order (the others are not read).
        unit: what progress is counted in: ``bytes``, or ``rows`` for Parquet.
        total: how much of ``unit`` there is, for a progress bar.

    Raises:
        InputFileError: the file cannot be replayed at all (unknown extension, no such file, unreadable header or
            Parquet footer, a non-nullable declared column missing, none of the declared columns present).
    """

    def __init__(
        self,
        path: str | Path,
        fields: dict[str, FieldSpec],
        *,
        block_bytes: int = BLOCK_BYTES,
        batch_rows: int = BATCH_ROWS,
        max_record_bytes: int = MAX_RECORD_BYTES,
        on_bad: Callable[[BadLine], None] | None = None,
    ) -> None:
        self.path, self.format = replay_path(path)
        self.fields = fields
        self.block_bytes, self.batch_rows, self.max_record_bytes = block_bytes, batch_rows, max(max_record_bytes, 1)
        self.on_bad = on_bad
        self.report = ReadReport(self.path, self.format)
        self.types = {name: arrow_type(spec) for name, spec in fields.items()}
        self.unit = "rows" if self.format == "parquet" else "bytes"
        self.total = self.path.stat().st_size
        self._header: list[str] = []
        self._data_offset, self._first_line = 0, 1
        if self.format == "csv":
            self._header = self._read_csv_header()
            self.columns = self._check_columns(self._header)
        elif self.format == "parquet":
            self.columns = self._check_columns(self._parquet_names())
        else:
            self.columns = list(fields)
        self._declared = DeclaredColumns(self.path, fields, self.types, self.columns, "row" if self.format == "parquet" else "line")

    # ------------------------------------------------------------------ public

    def chunks(self, on_read: Callable[[int], None] | None = None) -> Iterator[Chunk]:
        """The typed rows, one chunk per block (batch), in file order; bad lines go to ``on_bad``.

        Args:
            on_read: called with the bytes (Parquet: rows) just read, adding up to :attr:`total`.

        Raises:
            InputFileError: the first block of the file holds no valid line (not this format, or not this pipeline's data).
        """
        parts = {"csv": self._csv_parts, "jsonl": self._jsonl_parts, "parquet": self._parquet_parts}[self.format](on_read)
        seen_any = False
        for rows, lines, bad in parts:
            if not seen_any and (rows.num_rows or bad):
                seen_any = True
                if not rows.num_rows:
                    raise InputFileError(
                        f"{self.path}: cannot be read as {self.format}: none of its first {len(bad)} {self.report.unit}s is valid ({bad[0]})"
                    )
            for b in bad:
                self.report.skipped += b.records
                if self.on_bad:
                    self.on_bad(b)
            if rows.num_rows:
                self.report.rows += rows.num_rows
                self.report.chunks += 1
                yield Chunk(rows, lines)

    # ------------------------------------------------------------------ columns

    def _check_columns(self, names: list[str]) -> list[str]:
        """The declared columns the file has, in declaration order.

        Raises:
            InputFileError: a column is named twice, a non-nullable declared column is missing, or no declared column is there.
        """
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputFileError(f"{self.path}: column(s) {dupes} appear more than once")
        missing = [n for n, spec in self.fields.items() if n not in names and not spec.nullable]
        if missing:
            raise InputFileError(f"{self.path}: no column {missing}, which the pipeline declares not nullable; the file has {names}")
        present = [n for n in self.fields if n in names]
        if not present:
            raise InputFileError(f"{self.path}: none of the declared columns {list(self.fields)} is in the file; it has {names}")
        self.report.ignored_columns = [n for n in names if n not in self.fields]
        return present

    # ------------------------------------------------------------------ CSV

    def _read_csv_header(self) -> list[str]:
        """The column names of the first record, and where the data starts.

        Raises:
            InputFileError: no header line, or one that is not UTF-8 CSV.
        """
        with open(self.path, "rb") as f:
            data = b""
            while True:
                block = f.read(64 << 10)
                data += block
                closed = first_record_end(data)
                if closed is not None or not block:
                    end = len(data) if closed is None else closed
                    break
                if len(data) > self.max_record_bytes:
                    raise InputFileError(f"{self.path}: the header line is longer than {self.max_record_bytes} bytes")
        header = data[:end]
        self._data_offset = min(end + 1, len(data))
        self._first_line = 2 + header.count(b"\n")
        try:
            text = header.decode("utf-8-sig").rstrip("\r")
        except UnicodeDecodeError as exc:
            raise InputFileError(f"{self.path}: cannot be read as csv: the header line is not UTF-8 ({exc.reason})") from exc
        if not text.strip():
            raise InputFileError(f"{self.path}: cannot be read as csv: no header line")
        return next(csv.reader(io.StringIO(text, newline="")))

    def _csv_parts(self, on_read: Callable[[int], None] | None) -> Iterator[_Part]:
        """The typed records of every region of a CSV file after its header.

        Args:
            on_read: called with the bytes just read (the header counted first).

        Yields:
            Typed rows, their lines and the lines skipped, one region at a time.
        """
        with open(self.path, "rb") as f:
            f.seek(self._data_offset)
            if on_read and self._data_offset:
                on_read(self._data_offset)
            carry, carry_line = b"", 0
            for region, line, eof, too_long in regions(f, self._first_line, self.block_bytes, self.max_record_bytes, on_read):
                bad = [BadLine(self.path, n, f"longer than {self.max_record_bytes} bytes") for n in too_long]
                if too_long and carry:  # an over-long line ends the unfinished record: read it as it is
                    records, flushed, _ = csv_records(carry, carry_line, len(self._header), True, self.max_record_bytes)
                    yield self._csv_typed(records, [*self._bad(flushed)])
                    carry = b""
                data, first = (carry + region, carry_line) if carry else (region, line)
                records, found, offset = csv_records(data, first, len(self._header), eof, self.max_record_bytes)
                carry, carry_line = data[offset:], first + data[:offset].count(b"\n")
                yield self._csv_typed(records, bad + self._bad(found))

    def _bad(self, found: list[tuple[int, int, str]]) -> list[BadLine]:
        """Bad records found while cutting, as (first line, last line, reason), as :class:`BadLine` s."""
        return [BadLine(self.path, a, why, b) for a, b, why in found]

    def _parse_csv(self, body: bytes) -> pa.Table:
        """Records (each a line or a quoted multi-line record) as columns of bytes.

        Raises:
            pa.ArrowInvalid: Arrow cuts a record differently (e.g. at a bare carriage return) or cannot parse it.
        """
        import pyarrow.csv as pcsv

        return pcsv.read_csv(
            io.BytesIO(body),
            read_options=pcsv.ReadOptions(column_names=self._header, use_threads=False, block_size=max(len(body) + 1, 1 << 20)),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                column_types={n: pa.binary() for n in self._header},
                include_columns=self.columns,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )

    def _csv_typed(self, records: Records, bad: list[BadLine]) -> _Part:
        """Parse and type the records of one region.

        Args:
            records: the region cut into records.
            bad: the lines already found bad in the region; those found here are added.

        Returns:
            Typed rows, their lines and every bad line of the region, in line order.
        """
        n = len(records.starts)
        if not n:
            return self._declared.empty(), np.empty(0, np.int64), bad
        index = np.arange(n)
        try:
            table = self._parse_csv(records.body(index))
        except pa.ArrowInvalid:
            table = None
        if table is None or table.num_rows != n:  # Arrow disagrees with the cut somewhere: parse record by record
            tables, kept = [], []
            for i in range(n):
                try:
                    one = self._parse_csv(records.body(index[i : i + 1]))
                    problem = None if one.num_rows == 1 else "cannot be parsed as one CSV record"
                except pa.ArrowInvalid as exc:
                    problem = arrow_reason(exc)
                if problem is None:
                    tables.append(one)
                    kept.append(i)
                else:
                    bad.append(BadLine(self.path, int(records.lines[i]), problem, int(records.last_lines[i])))
            if not kept:
                return self._declared.empty(), np.empty(0, np.int64), sorted(bad, key=lambda b: b.line)
            table, index = pa.concat_tables(tables), np.asarray(kept)
        rows, lines, wrong = self._declared.typed(table, records.lines[index], records.last_lines[index])
        return rows, lines, sorted(bad + wrong, key=lambda b: b.line)

    # ------------------------------------------------------------------ JSON lines

    def _jsonl_parts(self, on_read: Callable[[int], None] | None) -> Iterator[_Part]:
        """The typed objects of every region of a JSON-lines file.

        Args:
            on_read: called with the bytes just read.

        Yields:
            Typed rows, their lines and the lines skipped, one region at a time.
        """
        import pyarrow.json as pjson

        # times and dates are read as strings and parsed like CSV values (a zone-less time is UTC)
        as_read = pa.schema(
            [pa.field(n, pa.string() if self.fields[n].type in ("timestamp", "date") else self.types[n], True) for n in self.columns]
        )
        options = pjson.ParseOptions(explicit_schema=as_read, unexpected_field_behavior="ignore", newlines_in_values=False)

        def parse(body: bytes) -> pa.Table:
            read = pjson.ReadOptions(use_threads=False, block_size=max(len(body) + 1, 1 << 16))
            return pjson.read_json(io.BytesIO(body), read_options=read, parse_options=options)

        with open(self.path, "rb") as f:
            for region, line, _, too_long in regions(f, 1, self.block_bytes, self.max_record_bytes, on_read):
                bad = [BadLine(self.path, n, f"longer than {self.max_record_bytes} bytes") for n in too_long]
                arr, starts, ends = line_bounds(region)
                if line == 1 and region.startswith(BOM) and len(starts):
                    starts[0] += len(BOM)
                ends = strip_cr(arr, starts, ends)
                filled = np.flatnonzero(ends > starts)
                lines = line + filled.astype(np.int64)
                records = Records(region, starts[filled], ends[filled], lines, lines)
                tables, kept = self._walk_jsonl(records, np.arange(len(filled)), parse, bad)
                if not tables:
                    yield self._declared.empty(), np.empty(0, np.int64), bad
                    continue
                index = np.concatenate(kept)
                rows, good_lines, wrong = self._declared.typed(pa.concat_tables(tables), records.lines[index], records.lines[index])
                yield rows, good_lines, sorted(bad + wrong, key=lambda b: b.line)

    def _walk_jsonl(
        self, records: Records, index: np.ndarray, parse: Callable[[bytes], pa.Table], bad: list[BadLine]
    ) -> tuple[list[pa.Table], list[np.ndarray]]:
        """Parse the lines at ``index``; where that fails, halve until the bad lines are found (they go to ``bad``).

        Args:
            records: the non-blank lines of a region.
            index: positions of the lines to parse, increasing.
            parse: Arrow's JSON reader with the declared schema.
            bad: where the lines that do not parse go.

        Returns:
            The parsed tables and, for each, the positions of its lines.
        """
        if not len(index):
            return [], []
        try:
            table = parse(records.body(index))
            if table.num_rows == len(index):
                return [table], [index]
            if len(index) == 1 and table.num_rows == 0:
                return [], []  # only white space: nothing to send
            problem = f"{table.num_rows} JSON values on one line, expected one object"
        except pa.ArrowInvalid as exc:
            problem = arrow_reason(exc)
        if len(index) == 1:
            bad.append(BadLine(self.path, int(records.lines[index[0]]), problem))
            return [], []
        half = len(index) // 2
        tables, kept = self._walk_jsonl(records, index[:half], parse, bad)
        more_tables, more_kept = self._walk_jsonl(records, index[half:], parse, bad)
        return tables + more_tables, kept + more_kept

    # ------------------------------------------------------------------ Parquet

    def _parquet_names(self) -> list[str]:
        """The column names in the Parquet footer; the row count becomes :attr:`total`.

        Raises:
            InputFileError: the footer cannot be read (not a Parquet file, or a truncated one).
        """
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(self.path)
            self.total = meta.metadata.num_rows
            return list(meta.schema_arrow.names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputFileError(f"{self.path}: cannot be read as parquet: {arrow_reason(exc)}") from exc

    def _parquet_parts(self, on_read: Callable[[int], None] | None) -> Iterator[_Part]:
        """The typed rows of a Parquet file, batch by batch; a row group that cannot be read is one bad span of rows.

        Args:
            on_read: called with the rows just read (those of a damaged row group too, so progress adds up).

        Yields:
            Typed rows, their row numbers and the rows skipped, one batch at a time.
        """
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(self.path)
        first = 1
        for group in range(pf.num_row_groups):
            size = pf.metadata.row_group(group).num_rows
            done = 0
            try:
                batches = pf.iter_batches(batch_size=self.batch_rows, row_groups=[group], columns=self.columns, use_threads=False)
                for batch in batches:
                    lines = np.arange(first + done, first + done + batch.num_rows, dtype=np.int64)
                    done += batch.num_rows
                    if on_read:
                        on_read(batch.num_rows)
                    yield self._declared.typed(pa.Table.from_batches([batch]), lines, lines)
            except (pa.ArrowInvalid, OSError) as exc:  # a damaged row group: its rows are reported, the others read
                if on_read:
                    on_read(size - done)
                why = f"row group {group} cannot be read: {arrow_reason(exc)}"
                yield self._declared.empty(), np.empty(0, np.int64), [BadLine(self.path, first + done, why, first + size - 1, "row")]
            first += size
