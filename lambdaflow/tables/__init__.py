"""Delta Lake tables on delta-rs, used by every layer.

Every write, from Arrow or from Spark, takes the same path: Parquet data files
are written into the table's own partition directories, then one Delta
transaction commits them (``add`` actions with partition values and min/max/null
statistics read from the Parquet footers). Spark executors write the files in
parallel; the driver commits. Spark's ``delta-spark`` jars are not needed;
see docs/architecture.md §7 (storage).

Partition directories are named with Spark's escaping (``a:b`` → ``a%3Ab``), so
Spark can read a snapshot through its file list with ``basePath`` and infer the
same partition values that the Delta log holds.

Traps of delta-rs 1.6.6 handled here (each has a test):
  * ``AddAction.path`` takes the raw relative path; delta-rs URL-encodes it.
  * ``get_add_actions()`` returns URL-encoded paths; removes are built from the
    decoded path, or they commit and remove nothing.
  * an overwrite whose new files lie outside its partition filter is accepted by
    delta-rs; :meth:`Table.commit_files` rejects it.
  * a repeated or lower ``txn`` version is accepted by delta-rs; it is checked
    here against the same snapshot the commit goes through, so a concurrent
    stale writer fails with :class:`ConcurrentCommitError`.

Modules:
  * :mod:`~lambdaflow.tables.layout`: partition directories and values, constants.
  * :mod:`~lambdaflow.tables.stats`: footer statistics, the stored schema, Spark DDL.
  * :mod:`~lambdaflow.tables.actions`: :class:`DataFile`, :class:`Txn`, :class:`CommitResult`.
  * :mod:`~lambdaflow.tables.snapshot`: :class:`Snapshot`.
  * :mod:`~lambdaflow.tables.table`: :class:`Table` (create, read, write, commit).
  * :mod:`~lambdaflow.tables.spark`: :func:`write_spark`, :func:`stage_spark`.
  * :mod:`~lambdaflow.tables.maintenance`: :func:`compact`, :func:`checkpoint`, :func:`vacuum`.

Importing this package never imports pyspark.
"""

from __future__ import annotations

from lambdaflow.errors import ConcurrentCommitError, PartitionFilterError, TableError, TableMissingError
from lambdaflow.tables.actions import CommitResult, DataFile, Head, Txn
from lambdaflow.tables.layout import (
    MAX_STRING_STAT,
    NULL_PARTITION,
    OPERATION_KEY,
    STAGING_DIR,
    WriteMode,
    escape_partition_value,
    parse_partition_dir,
    partition_dir,
    serialize_partition_value,
    unescape_partition_value,
)
from lambdaflow.tables.maintenance import checkpoint, compact, vacuum
from lambdaflow.tables.snapshot import Snapshot
from lambdaflow.tables.spark import stage_spark, write_spark
from lambdaflow.tables.stats import footer_stats, normalize_schema, spark_ddl
from lambdaflow.tables.table import Table

__all__ = [
    "MAX_STRING_STAT",
    "NULL_PARTITION",
    "OPERATION_KEY",
    "STAGING_DIR",
    "CommitResult",
    "ConcurrentCommitError",
    "DataFile",
    "Head",
    "PartitionFilterError",
    "Snapshot",
    "Table",
    "TableError",
    "TableMissingError",
    "Txn",
    "WriteMode",
    "checkpoint",
    "compact",
    "escape_partition_value",
    "footer_stats",
    "normalize_schema",
    "parse_partition_dir",
    "partition_dir",
    "serialize_partition_value",
    "spark_ddl",
    "stage_spark",
    "unescape_partition_value",
    "vacuum",
    "write_spark",
]
