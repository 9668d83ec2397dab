"""Table maintenance: compaction, checkpoints and vacuum, each a function of a :class:`~lambdaflow.tables.Table`.

All three are safe while the layers write: compaction is an ordinary commit
(data unchanged), a checkpoint only summarises the log, and vacuum deletes only
files no version within the retention period references.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow.fs as pafs

from lambdaflow.tables.layout import STAGING_DIR
from lambdaflow.tables.table import Table

__all__ = ["checkpoint", "compact", "vacuum"]

#: delta-rs refuses a shorter vacuum retention unless told not to enforce it (one week, its default).
DEFAULT_RETENTION_HOURS = 168


def compact(table: Table, target_size: int | None = None) -> dict[str, Any]:
    """Merge small files (delta-rs optimize); data unchanged, one commit.

    Args:
        table: the table to compact.
        target_size: the file size to aim for, in bytes (default: delta-rs's).

    Returns:
        delta-rs's metrics (``numFilesAdded``, ``numFilesRemoved``, ...).

    Raises:
        TableMissingError: there is no table at the URI.
    """
    return table._delta().optimize.compact(target_size=target_size)


def checkpoint(table: Table) -> None:
    """Write a Delta checkpoint so readers need not replay the whole log.

    Raises:
        TableMissingError: there is no table at the URI.
    """
    table._delta().create_checkpoint()


def vacuum(table: Table, retention_hours: int = DEFAULT_RETENTION_HOURS, dry_run: bool = False) -> list[str]:
    """Delete files no version newer than the retention needs (and stale staging output).

    Staging directories of Spark jobs (``_staging/<id>``) older than the
    retention belong to jobs that died before committing; they are deleted too.

    Args:
        table: the table to vacuum.
        retention_hours: keep every file a version of the last this many hours needs.
        dry_run: only list what would be deleted.

    Returns:
        The data files deleted (or that would be), as delta-rs reports them.

    Raises:
        TableMissingError: there is no table at the URI.
    """
    delta = table._delta()
    removed = delta.vacuum(
        retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=retention_hours >= DEFAULT_RETENTION_HOURS
    )
    # delta-rs vacuum skips `_`-prefixed directories, so the output of Spark jobs that died between
    # staging and commit (see lambdaflow.tables.spark.stage_spark) is only ever deleted here.
    if not dry_run and table._exists(STAGING_DIR):
        cutoff = time.time() - retention_hours * 3600
        for info in table._fs.get_file_info(pafs.FileSelector(table._abs(STAGING_DIR))):
            if info.mtime and info.mtime.timestamp() < cutoff:
                table._fs.delete_dir(info.path)
    return removed
