"""The file formats a replay reads, told by suffix, and :func:`read_file` for reading a small file whole.

The suffix alone says the format: a replay refuses a file it cannot name before opening it,
rather than guessing from its first bytes.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from lambdaflow.errors import InputFileError

__all__ = ["REPLAY_FORMATS", "read_file", "replay_path"]

#: File suffixes a replay accepts, and the format each means.
REPLAY_FORMATS: dict[str, str] = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


def replay_path(path: str | Path) -> tuple[Path, str]:
    """The path and its format.

    Args:
        path: the file to replay.

    Returns:
        The path and its format: ``csv``, ``jsonl`` or ``parquet``.

    Raises:
        InputFileError: the extension is not one a replay reads, or there is no such file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in REPLAY_FORMATS:
        raise InputFileError(f"{path}: cannot replay a {suffix or 'suffix-less'} file; use .csv, .parquet or .jsonl")
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    return path, REPLAY_FORMATS[suffix]


def read_file(path: str | Path) -> pa.Table:
    """Read a whole CSV, Parquet or JSON-lines file into Arrow, with the types Arrow infers.

    For small files and notebooks; a replay reads with :class:`~lambdaflow.replay.FileReader` instead
    (declared types, bad lines skipped and reported, bounded memory).

    Args:
        path: the file; its extension says its format.

    Returns:
        All of its rows.

    Raises:
        InputFileError: the file is missing, has another extension than .csv, .parquet, .jsonl / .json,
            or cannot be parsed.
    """
    path, fmt = replay_path(path)
    try:
        # each reader is imported only for its own format: most callers need one of the three
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if fmt == "csv":
            import pyarrow.csv as pcsv

            return pcsv.read_csv(path)
        import pyarrow.json as pjson

        return pjson.read_json(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputFileError(f"{path}: cannot be read as {path.suffix.lstrip('.').lower()}: {str(exc).splitlines()[0]}") from exc
