"""Replaying a file (``lambdaflow produce --file``): read as the pipeline declares it, then put in exact time order.

Built for real-world files:

* **Typed as declared.** :class:`FileReader` reads CSV, JSON lines and Parquet with the
  types the pipeline declares for the stream (``events.fields`` or ``labels.fields``),
  never with types guessed from the data: a CSV ``00123`` in a string field stays the
  string ``"00123"``. An empty (unquoted) CSV field is null, as a null is in Parquet or
  JSON, so keys do not depend on the file format; a quoted ``""`` is the empty string.
  Columns the pipeline does not declare are not sent (the reader says which).
* **A bad line is skipped, reported and the rest goes on.** A line that is not valid
  CSV/JSON, has the wrong number of fields, or holds a value that does not fit its
  declared type (also a type that changes between lines) becomes a :class:`BadLine`
  (``file:line: reason``; ``file: row N`` for Parquet) and is counted in
  :attr:`ReadReport.skipped`. Only a file that cannot be read at all (unknown type, no
  such file, no header, a missing non-nullable column, no valid line in its first block)
  raises :class:`~lambdaflow.errors.InputFileError`, before anything is sent.
* **Streamed in bounded memory.** CSV and JSON lines are read in blocks of
  :data:`BLOCK_BYTES`, Parquet in batches of :data:`BATCH_ROWS` per row group.
  ``pyarrow.csv.open_csv`` cannot say on which line a row was (``InvalidRow.number`` is
  ``None`` when streaming, blank lines vanish), so blocks are cut into records here,
  quote-aware, and each block is parsed by Arrow with every column read as bytes. Lines
  end with ``\\n`` or ``\\r\\n``; a line with an unbalanced quote that no later line closes
  into a record of the right width is one bad line, not the rest of the file.
* **Sent in exact time order.** :class:`TimeSorted` orders the rows by the time column of
  the stream being replayed (events: ``events.time_column``; labels:
  ``labels.time_column``), ties in file order, whatever the order of the file: an
  external merge sort. Runs of up to :data:`SORT_RUN_ROWS` rows are sorted in memory and
  spilled to a temporary directory (``$TMPDIR``), then merged while sending; memory
  stays bounded by one run (then one batch per run), temporary disk use is about the size
  of the data. Rows without a time are sent last, in file order. Nothing is sent before
  the whole file has been read, so every bad line is reported before the first record goes out.

Sending the sorted rows is :func:`lambdaflow.producer.produce_rows`; this package never touches Kafka.

Modules:
  * :mod:`~lambdaflow.replay.formats`: the suffixes a replay reads, :func:`read_file` (a small file, whole).
  * :mod:`~lambdaflow.replay.results`: :class:`Chunk`, :class:`BadLine`, :class:`ReadReport`.
  * :mod:`~lambdaflow.replay.records`: cutting CSV and JSON-lines blocks into records with their line numbers.
  * :mod:`~lambdaflow.replay.casting`: values as their declared types, and why one does not fit.
  * :mod:`~lambdaflow.replay.reading`: :class:`FileReader`.
  * :mod:`~lambdaflow.replay.sorting`: :class:`TimeSorted`.
"""

from __future__ import annotations

from lambdaflow.replay.formats import REPLAY_FORMATS, read_file
from lambdaflow.replay.reading import BATCH_ROWS, BLOCK_BYTES, MAX_RECORD_BYTES, FileReader
from lambdaflow.replay.results import BadLine, Chunk, ReadReport
from lambdaflow.replay.sorting import CHUNK_ROWS, MERGE_BATCH_ROWS, NO_TIME, SORT_RUN_ROWS, TimeSorted

__all__ = [
    "BATCH_ROWS",
    "BLOCK_BYTES",
    "CHUNK_ROWS",
    "MAX_RECORD_BYTES",
    "MERGE_BATCH_ROWS",
    "NO_TIME",
    "REPLAY_FORMATS",
    "SORT_RUN_ROWS",
    "BadLine",
    "Chunk",
    "FileReader",
    "ReadReport",
    "TimeSorted",
    "read_file",
]
