"""Time order for a replay: :class:`TimeSorted`, an external merge sort that is exact, stable and bounded in memory.

A replayed file is sent in exact order of the stream's time column, ties in file order, whatever the
order of the file. Runs of up to :data:`SORT_RUN_ROWS` rows are sorted in memory and spilled to a
temporary directory (``$TMPDIR``) as Arrow IPC files, then merged while sending: memory stays bounded
by one run (then one batch per run), temporary disk use is about the size of the data. Rows without
a time are sent last, in file order.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.errors import InputFileError
from lambdaflow.replay.results import Chunk

__all__ = ["CHUNK_ROWS", "MERGE_BATCH_ROWS", "NO_TIME", "SORT_RUN_ROWS", "TimeSorted"]

#: Rows per table handed out, and so per chunk the producer encodes and sends (bounded memory for big files).
CHUNK_ROWS = 5000
#: Rows sorted in memory before they are spilled to disk as one sorted run.
SORT_RUN_ROWS = 250_000
#: Rows read from each spilled run at a time while merging.
MERGE_BATCH_ROWS = 4096

#: Sort key of a row without a time: after every row that has one.
NO_TIME = np.iinfo(np.int64).max
# the sort key travels with the rows of a spilled run as two extra columns, so the merge need not recompute it
_KEY_TIME, _KEY_LINE = "__lambdaflow_time__", "__lambdaflow_line__"


def _time_keys(rows: pa.Table, time_column: str | None) -> np.ndarray:
    """The sort key of every row: its time (int64, microseconds for timestamps), :data:`NO_TIME` when it has none.

    Args:
        rows: typed rows.
        time_column: the column to order by; None or absent: no row has a time.

    Returns:
        One int64 key per row.
    """
    if not time_column or time_column not in rows.column_names:
        return np.full(rows.num_rows, NO_TIME, np.int64)
    column = rows.column(time_column)
    if pa.types.is_timestamp(column.type) or pa.types.is_integer(column.type):
        values = pc.cast(column, pa.int64())
    elif pa.types.is_date(column.type):
        values = pc.cast(pc.cast(column, pa.int32()), pa.int64())
    else:  # a time column of another type has no order to keep
        return np.full(rows.num_rows, NO_TIME, np.int64)
    return np.asarray(pc.fill_null(values, NO_TIME).to_numpy(zero_copy_only=False), np.int64)


def _count_up_to(times: np.ndarray, lines: np.ndarray, time: int, line: int) -> int:
    """How many leading rows of a run sorted by (time, line) have a key ≤ (time, line).

    Args:
        times: the time keys of the run's rows, sorted.
        lines: their line numbers (sorted among equal times).
        time: the time of the bound.
        line: the line of the bound.

    Returns:
        The number of rows up to and including the bound.
    """
    low, high = int(np.searchsorted(times, time, "left")), int(np.searchsorted(times, time, "right"))
    return low + int(np.searchsorted(lines[low:high], line, "right"))


class TimeSorted:
    """The rows of ``chunks`` in time order: exact, stable (file order among equal times), in bounded memory.

    Reads all chunks once (an external merge sort): every :data:`SORT_RUN_ROWS` rows are sorted by
    (time, line) and, unless the whole input fits in one run, spilled as an Arrow IPC file to a
    temporary directory. Iterating merges the runs, :data:`MERGE_BATCH_ROWS` rows of each at a time.
    Rows without a time (or when the time column is absent) come last, in file order.

    Use as a context manager (or call :meth:`close`) to remove the spilled runs.

    Args:
        chunks: typed rows and their line numbers, in file order (line numbers increase).
        time_column: the column to order by.
        run_rows: rows sorted in memory per run.
        merge_rows: rows of a run read at a time while merging.
        out_rows: rows per table handed out.
        spill_dir: where the runs go (default: the system's temporary directory, ``$TMPDIR``).

    Attributes:
        num_rows: rows read.
        out_of_order: rows earlier than a row before them in the file (all of them are sent in time order anyway).
        no_time: rows without a time (sent last, in file order).

    Raises:
        InputFileError: a sorted run could not be written to disk.
    """

    def __init__(
        self,
        chunks: Iterable[Chunk],
        time_column: str | None,
        *,
        run_rows: int = SORT_RUN_ROWS,
        merge_rows: int = MERGE_BATCH_ROWS,
        out_rows: int = CHUNK_ROWS,
        spill_dir: str | Path | None = None,
    ) -> None:
        self.time_column = time_column
        self.num_rows = 0
        self.out_of_order = 0
        self.no_time = 0
        self._merge_rows, self._out_rows = max(merge_rows, 1), max(out_rows, 1)
        self._spill_dir = spill_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._runs: list[Path] = []
        self._memory: pa.Table | None = None
        self._latest = np.iinfo(np.int64).min
        buffered: list[tuple[Chunk, np.ndarray]] = []
        rows = 0
        try:
            for chunk in chunks:
                if not chunk.rows.num_rows:
                    continue
                keys = _time_keys(chunk.rows, time_column)
                self._observe(keys)
                buffered.append((chunk, keys))
                rows += chunk.rows.num_rows
                if rows >= run_rows:
                    self._spill(self._sorted(buffered))
                    buffered, rows = [], 0
            if buffered:
                run = self._sorted(buffered)
                if self._runs:
                    self._spill(run)
                else:
                    self._memory = run
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> TimeSorted:
        """The sorted rows, whose spilled runs are removed on leaving the block."""
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """Remove the spilled runs, whether the block ended normally or not."""
        self.close()

    def close(self) -> None:
        """Remove the spilled runs."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self._runs, self._memory = [], None

    @property
    def spilled_runs(self) -> int:
        """How many sorted runs went to disk (0: the input fitted in memory)."""
        return len(self._runs)

    def __iter__(self) -> Iterator[pa.Table]:
        """Tables of at most ``out_rows`` rows, in (time, line) order."""
        for table in self._merged():
            table = table.drop_columns([_KEY_TIME, _KEY_LINE])
            for offset in range(0, table.num_rows, self._out_rows):
                yield table.slice(offset, self._out_rows)

    # ------------------------------------------------------------------ internals

    def _observe(self, keys: np.ndarray) -> None:
        """Count the rows of a chunk, those without a time and those out of file order.

        Args:
            keys: the time keys of the chunk's rows, in file order.
        """
        timed = keys[keys != NO_TIME]
        self.num_rows += len(keys)
        self.no_time += len(keys) - len(timed)
        if len(timed):
            running = np.maximum.accumulate(timed)
            before = np.concatenate(([self._latest], running[:-1]))
            self.out_of_order += int(np.count_nonzero(timed < np.maximum(before, self._latest)))
            self._latest = max(self._latest, int(running[-1]))

    @staticmethod
    def _sorted(buffered: list[tuple[Chunk, np.ndarray]]) -> pa.Table:
        """One run: the buffered chunks sorted by (time, line), with the key as two extra columns.

        Args:
            buffered: chunks and the time keys of their rows.

        Returns:
            The rows in order, with :data:`_KEY_TIME` and :data:`_KEY_LINE` appended.
        """
        table = pa.concat_tables([c.rows for c, _ in buffered])
        keys = np.concatenate([k for _, k in buffered])
        lines = np.concatenate([np.asarray(c.lines, np.int64) for c, _ in buffered])
        order = np.lexsort((lines, keys))
        return table.take(pa.array(order)).append_column(_KEY_TIME, pa.array(keys[order])).append_column(_KEY_LINE, pa.array(lines[order]))

    def _spill(self, run: pa.Table) -> None:
        """Write a sorted run to the temporary directory, in batches of ``merge_rows`` for the merge to read one at a time.

        Args:
            run: the output of :meth:`_sorted`.

        Raises:
            InputFileError: the run could not be written (e.g. the disk is full).
        """
        try:
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="lambdaflow-replay-", dir=self._spill_dir)
            path = Path(self._tmp.name) / f"run-{len(self._runs):06d}.arrow"
            options = pa.ipc.IpcWriteOptions(compression="lz4" if pa.Codec.is_available("lz4") else None)
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, run.schema, options=options) as writer:
                writer.write_table(run, max_chunksize=self._merge_rows)
        except OSError as exc:
            where = self._tmp.name if self._tmp else (self._spill_dir or tempfile.gettempdir())
            raise InputFileError(
                f"cannot order the replay by time: writing a sorted run to {where} failed ({exc}); point TMPDIR to a roomier disk"
            ) from exc
        self._runs.append(path)

    def _merged(self) -> Iterator[pa.Table]:
        """The rows of all runs in (time, line) order, a batch of each run at a time.

        Yields:
            Tables in order, each with the two key columns.
        """
        if self._memory is not None:
            yield self._memory
            return
        files = [pa.memory_map(str(p)) for p in self._runs]
        try:
            readers = [pa.ipc.open_file(f) for f in files]
            batch = [0] * len(readers)
            heads: list[pa.Table] = [r.schema.empty_table() for r in readers]
            times: list[np.ndarray] = [np.empty(0, np.int64)] * len(readers)
            lines: list[np.ndarray] = [np.empty(0, np.int64)] * len(readers)
            while True:
                for k, reader in enumerate(readers):
                    while not heads[k].num_rows and batch[k] < reader.num_record_batches:
                        head = pa.Table.from_batches([reader.get_batch(batch[k])])
                        heads[k], batch[k] = head, batch[k] + 1
                        times[k] = head.column(_KEY_TIME).to_numpy()
                        lines[k] = head.column(_KEY_LINE).to_numpy()
                live = [k for k in range(len(readers)) if heads[k].num_rows]
                if not live:
                    return
                # every row not read yet sorts after the last row read of its run: the smallest of those is safe to reach
                unread = [k for k in live if batch[k] < readers[k].num_record_batches]
                bound = min(((int(times[k][-1]), int(lines[k][-1])) for k in unread), default=None)
                pieces, piece_times, piece_lines = [], [], []
                for k in live:
                    head = heads[k]
                    n = head.num_rows if bound is None else _count_up_to(times[k], lines[k], *bound)
                    if n:
                        pieces.append(head.slice(0, n))
                        piece_times.append(times[k][:n])
                        piece_lines.append(lines[k][:n])
                        heads[k], times[k], lines[k] = head.slice(n), times[k][n:], lines[k][n:]
                merged = pa.concat_tables(pieces)
                yield merged.take(pa.array(np.lexsort((np.concatenate(piece_lines), np.concatenate(piece_times)))))
        finally:
            for f in files:
                f.close()
