"""What reading a replayed file yields: typed :class:`Chunk` s, the :class:`BadLine` s skipped, a :class:`ReadReport`.

Kept apart from the reader so that what consumes a read (the time sort, the command line) needs
these small value types only, not the reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

__all__ = ["BadLine", "Chunk", "ReadReport"]


@dataclass(frozen=True)
class BadLine:
    """A line of a replayed file (a row of a Parquet file) that was skipped, and why.

    Attributes:
        path: the file.
        line: the (first) line, or Parquet row, skipped; numbered from 1.
        reason: why, in one line.
        last_line: last line of a record that spans several lines (a quoted CSV value with line breaks),
            or last row of a damaged Parquet row group.
        unit: what ``line`` counts: lines of a text file or rows of a Parquet file.
    """

    path: Path
    line: int
    reason: str
    last_line: int | None = None
    unit: Literal["line", "row"] = "line"

    @property
    def records(self) -> int:
        """Records skipped: one for a line (however many lines a CSV record spans), every row of a Parquet span."""
        return (self.last_line or self.line) - self.line + 1 if self.unit == "row" else 1

    def __str__(self) -> str:
        span = f"{self.line}-{self.last_line}" if self.last_line and self.last_line > self.line else str(self.line)
        where = f"{self.path}:{span}" if self.unit == "line" else f"{self.path}: row {span}"
        return f"{where}: {self.reason}"


@dataclass
class ReadReport:
    """What a :class:`~lambdaflow.replay.FileReader` read and skipped.

    Attributes:
        path: the file.
        format: ``csv``, ``jsonl`` or ``parquet``.
        rows: rows read and typed (what will be sent).
        skipped: lines (Parquet: rows) skipped, every one of them passed to ``on_bad``.
        chunks: chunks handed out; more than one means the file was never held whole.
        ignored_columns: columns of the file the pipeline does not declare: not sent.
    """

    path: Path
    format: str
    rows: int = 0
    skipped: int = 0
    chunks: int = 0
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def unit(self) -> str:
        """What :attr:`skipped` counts: ``row`` for Parquet, ``line`` for text files."""
        return "row" if self.format == "parquet" else "line"


@dataclass(frozen=True)
class Chunk:
    """Typed rows read from a file, with the line (Parquet: row) number of each, increasing.

    Attributes:
        rows: the rows, with the declared columns and types.
        lines: int64 line (row) number of each row; the time sort breaks ties with it.
    """

    rows: pa.Table
    lines: np.ndarray
