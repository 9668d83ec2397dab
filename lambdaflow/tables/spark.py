"""The Spark write path: executors write Parquet, the driver describes the files and commits them.

Spark's ``delta-spark`` jars are not needed: Spark only writes plain Parquet
(partitioned with its own directory escaping, which :mod:`lambdaflow.tables.layout`
mirrors), and the commit goes through :meth:`lambdaflow.tables.Table.commit_files`
like every Arrow write. pyspark itself is never imported here — these functions
only call methods of the DataFrame they are given — so the speed layer, which
imports :mod:`lambdaflow.tables`, does not need it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs
from deltalake import DeltaTable

from lambdaflow.tables.actions import CommitResult, DataFile, Txn
from lambdaflow.tables.layout import STAGING_DIR, WriteMode
from lambdaflow.tables.table import Table, delta_layout

if TYPE_CHECKING:  # pyspark is imported lazily: the speed layer never needs it
    from pyspark.sql import DataFrame

__all__ = ["stage_spark", "write_spark"]


def write_spark(
    table: Table,
    frame: DataFrame,
    mode: WriteMode = "append",
    *,
    partitions: Sequence[Mapping[str, Any]] | None = None,
    txn: Txn | None = None,
    metadata: Mapping[str, Any] | None = None,
    operation: str | None = None,
) -> CommitResult:
    """Write a Spark DataFrame to ``table`` in one commit: executors write Parquet, the driver commits.

    The ``txn`` check happens before Spark runs, against the same snapshot the
    commit goes through; see :func:`stage_spark` for the files and
    :meth:`lambdaflow.tables.Table.commit_files` for the other arguments.

    Returns:
        The new version, or ``skipped=True`` when ``txn`` was already committed (Spark did not run).

    Raises:
        PartitionFilterError: an overwrite adds rows outside ``partitions``; the written files are deleted.
        ConcurrentCommitError: another writer committed first; the written files are deleted.
        TableMissingError: there is no table at the URI.
    """
    return table._write_then_commit(lambda delta: stage_spark(table, frame, delta), mode, partitions, txn, metadata, operation)


def stage_spark(table: Table, frame: DataFrame, delta: DeltaTable | None = None) -> list[DataFile]:
    """Write a Spark DataFrame as data files of ``table``, not yet committed.

    Spark's output is staged under ``_staging/<id>/``, then moved into the
    table's partition directories and described from the Parquet footers.
    Until :meth:`lambdaflow.tables.Table.commit_files` they are invisible to
    readers; if the job dies first, vacuum removes them.

    Args:
        table: the table the files are for.
        frame: the rows; it must have every column of the table schema.
        delta: the snapshot whose schema and partitioning to write (default: the latest).

    Returns:
        The files, ready for :meth:`lambdaflow.tables.Table.commit_files`.

    Raises:
        TableMissingError: there is no table at the URI.
        TableError: a file Spark wrote lies outside the partition directories.
    """
    delta = delta or table._delta()
    schema, partition_by = delta_layout(delta)
    stage_rel = f"{STAGING_DIR}/{uuid.uuid4().hex}"
    ordered = frame.select(*[f"`{c}`" for c in schema.names])
    writer = ordered.write.mode("error").option("compression", "snappy")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.parquet(table.file_uri(stage_rel))
    files: list[DataFile] = []
    try:
        for rel in _staged_parquet(table, stage_rel):
            target = rel[len(stage_rel) + 1 :]
            target_dir = target.rsplit("/", 1)[0] if "/" in target else ""
            if target_dir:
                table._fs.create_dir(table._abs(target_dir), recursive=True)
            table._fs.move(table._abs(rel), table._abs(target))
            files.append(table._describe(target, partition_by))
    except Exception:
        table._delete_quietly(files)
        raise
    finally:
        table._fs.delete_dir_contents(table._abs(stage_rel), missing_dir_ok=True)
        if table._exists(stage_rel):
            table._fs.delete_dir(table._abs(stage_rel))
    return files


def _staged_parquet(table: Table, stage_rel: str) -> list[str]:
    """The Parquet files Spark wrote under ``stage_rel``, relative to the table root, sorted.

    Spark's markers (``_SUCCESS``) and checksums (``.crc``) are skipped.
    """
    selector = pafs.FileSelector(table._abs(stage_rel), recursive=True)
    out: list[str] = []
    for info in table._fs.get_file_info(selector):
        name = info.base_name
        if info.type == pafs.FileType.File and name.endswith(".parquet") and not name.startswith(("_", ".")):
            out.append(info.path[len(table._root) + 1 :] if table._root else info.path)
    return sorted(out)
