"""One version of a Delta table (:class:`Snapshot`): its schema, its live files, and readers over exactly those files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from lambdaflow.tables.actions import DataFile
from lambdaflow.tables.stats import conform, spark_ddl

if TYPE_CHECKING:  # pyspark is imported lazily: the speed layer never needs it
    from pyspark.sql import DataFrame, SparkSession

    from lambdaflow.tables.table import Table  # table.py builds snapshots, so only the type is imported here

__all__ = ["Snapshot"]


@dataclass(frozen=True)
class Snapshot:
    """One version of a table: its schema and its live data files.

    Read a snapshot through its file list only: the table directory also holds
    removed and uncommitted files.

    Attributes:
        table: the table this is a version of.
        version: the Delta version.
        schema: the table schema at this version (normalised, partition columns included).
        partition_by: the partition columns.
        files: the live data files.
    """

    table: Table
    version: int
    schema: pa.Schema
    partition_by: tuple[str, ...]
    files: tuple[DataFile, ...]
    _delta: DeltaTable = field(repr=False, compare=False)

    @property
    def uris(self) -> list[str]:
        """Absolute URIs of the live data files."""
        return [self.table.file_uri(f.path) for f in self.files]

    @property
    def num_records(self) -> int:
        """Rows in the snapshot, from the file statistics (no data is read)."""
        return sum(f.num_records for f in self.files)

    def to_arrow(self, columns: Sequence[str] | None = None, filter: pc.Expression | None = None) -> pa.Table:
        """The snapshot's rows as an Arrow table (partition columns included).

        Args:
            columns: the columns to read, in this order (default: all, in table order).
            filter: a row filter; file statistics let it skip whole files.
        """
        dataset = self._delta.to_pyarrow_dataset()
        result = dataset.to_table(columns=list(columns) if columns else None, filter=filter)
        return conform(result, pa.schema([self.schema.field(c) for c in (columns or self.schema.names)]))

    def txn_version(self, app_id: str) -> int | None:
        """The application's last ``txn`` version in this snapshot."""
        return self._delta.transaction_version(app_id)

    def to_arrow_dataset(self) -> Any:
        """A lazy ``pyarrow.dataset`` over exactly this snapshot's files, partition columns included."""
        return self._delta.to_pyarrow_dataset()

    def to_spark(self, spark: SparkSession) -> DataFrame:
        """The snapshot's rows as a Spark DataFrame, read from its file list.

        Partition values come from the directory names (``basePath``), typed by
        the table schema.

        Raises:
            TableError: a column has an Arrow type with no Spark equivalent.
        """
        ddl = spark_ddl(self.schema)
        if not self.files:
            return spark.createDataFrame([], ddl)
        reader = spark.read.schema(ddl).option("basePath", self.table.uri)
        # Spark puts partition columns last; restore the table's column order
        return reader.parquet(*self.uris).select(*[f"`{c}`" for c in self.schema.names])
