"""The master dataset: ``master/events`` and ``master/labels``, immutable, appended exactly once.

Also the one rule for duplicate deliveries: of several rows with the same event
id, the **first copy** counts — the one with the smallest (``_ingest_seq``,
``_kafka_partition``, ``_kafka_offset``), then event time. The batch layer
(Spark), the speed layer and ``verify`` (Arrow) all apply :data:`FIRST_COPY_ORDER`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.config import EventsSpec, LabelsSpec, Settings
from lambdaflow.contracts.paths import MASTER_EVENTS, MASTER_LABELS, table_uri
from lambdaflow.schemas import INGEST_SEQ, INGESTED_AT, KAFKA_OFFSET, KAFKA_PARTITION, fields_schema, master_schema, with_ingest_fields
from lambdaflow.tables import Table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = [
    "FIRST_COPY_ORDER",
    "events_table",
    "first_copies",
    "first_copies_spark",
    "ingest_columns",
    "labels_schema",
    "labels_table",
    "row_order",
    "to_label_rows",
    "to_master_rows",
]

#: Which copy of a repeated delivery counts: the smallest of these, compared in this order (nulls last).
FIRST_COPY_ORDER: tuple[str, ...] = (INGEST_SEQ, KAFKA_PARTITION, KAFKA_OFFSET)


def events_table(settings: Settings, create: bool = True) -> Table:
    """The ``master/events`` table, created with its schema if missing (when ``create``)."""
    table = Table(table_uri(settings.profile, MASTER_EVENTS))
    if create:
        events = settings.pipeline.events
        table.create(master_schema(events), [events.date_partition], name="master_events")
    return table


def ingest_columns(
    n: int,
    seq: int,
    kafka_partitions: pa.Array | None = None,
    kafka_offsets: pa.Array | None = None,
    ingested_at: dt.datetime | None = None,
) -> dict[str, pa.Array]:
    """The ingest-coordinate columns of ``n`` records of micro-batch ``seq``."""
    when = ingested_at or dt.datetime.now(dt.timezone.utc)
    return {
        INGEST_SEQ: pa.array(np.full(n, seq, np.int64)),
        KAFKA_PARTITION: kafka_partitions if kafka_partitions is not None else pa.nulls(n, pa.int32()),
        KAFKA_OFFSET: kafka_offsets if kafka_offsets is not None else pa.nulls(n, pa.int64()),
        INGESTED_AT: pa.array([when] * n, pa.timestamp("us", tz="UTC")),
    }


def to_master_rows(
    events: pa.Table,
    spec: EventsSpec,
    seq: int,
    kafka_partitions: pa.Array | None = None,
    kafka_offsets: pa.Array | None = None,
    ingested_at: dt.datetime | None = None,
) -> pa.Table:
    """Valid events as ``master/events`` rows of micro-batch ``seq``."""
    columns = {name: events.column(name) for name in spec.fields}
    columns.update(ingest_columns(events.num_rows, seq, kafka_partitions, kafka_offsets, ingested_at))
    columns[spec.date_partition] = pc.cast(pc.cast(events.column(spec.time_column), pa.timestamp("us", tz="UTC")), pa.date32())
    return pa.table(columns).cast(master_schema(spec))


def labels_schema(spec: LabelsSpec) -> pa.Schema:
    """Schema of ``master/labels``: the label record and its ingest coordinates."""
    return with_ingest_fields(fields_schema(spec.fields))


def labels_table(settings: Settings, create: bool = True) -> Table:
    """The ``master/labels`` table (created if missing when ``create``).

    Raises:
        ValueError: the pipeline declares no labels.
    """
    spec = settings.pipeline.labels
    if spec is None:
        raise ValueError("the pipeline has no 'labels' section")
    table = Table(table_uri(settings.profile, MASTER_LABELS))
    if create:
        table.create(labels_schema(spec), name="master_labels")
    return table


def to_label_rows(
    labels: pa.Table,
    spec: LabelsSpec,
    seq: int,
    kafka_partitions: pa.Array | None = None,
    kafka_offsets: pa.Array | None = None,
    ingested_at: dt.datetime | None = None,
) -> pa.Table:
    """Valid label records as ``master/labels`` rows of micro-batch ``seq``."""
    columns = {name: labels.column(name) for name in spec.fields}
    columns.update(ingest_columns(labels.num_rows, seq, kafka_partitions, kafka_offsets, ingested_at))
    return pa.table(columns).cast(labels_schema(spec))


def _order_columns(time_column: str) -> tuple[str, ...]:
    return (*FIRST_COPY_ORDER, time_column)


def row_order(rows: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """Row indices of ``rows`` sorted by ``columns`` (the first is the primary key), nulls last.

    Columns the table lacks are skipped; strings compare in their sort order.
    """
    keys = []
    for name in reversed(columns):  # np.lexsort: the last key is the primary one
        if name in rows.column_names:
            column = rows.column(name)
            if pa.types.is_timestamp(column.type):
                column = pc.cast(column, pa.int64())
            values = column.to_numpy(zero_copy_only=False)
            if values.dtype == object:
                values = pd.factorize(values, sort=True)[0]
            keys.append(np.nan_to_num(values.astype(np.float64), nan=np.inf))
    return np.lexsort(keys) if keys else np.arange(rows.num_rows)


def first_copies(events: pa.Table, id_column: str, time_column: str) -> pa.Table:
    """One row per event id, the first copy by :data:`FIRST_COPY_ORDER`; the rows kept stay in input order."""
    if events.num_rows == 0:
        return events
    order = row_order(events, _order_columns(time_column))
    ids = events.column(id_column).to_numpy(zero_copy_only=False)[order]
    _, first = np.unique(ids, return_index=True)
    if len(first) == events.num_rows:
        return events
    return events.take(pa.array(np.sort(order[first])))


def first_copies_spark(events: DataFrame, id_column: str, time_column: str) -> DataFrame:
    """:func:`first_copies` for Spark: one row per event id, the first copy by :data:`FIRST_COPY_ORDER`."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy(F.col(f"`{id_column}`")).orderBy(*[F.col(f"`{c}`").asc_nulls_last() for c in _order_columns(time_column)])
    return events.withColumn("__copy", F.row_number().over(order)).where("__copy = 1").drop("__copy")
