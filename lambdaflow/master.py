"""The master dataset: ``master/events``, immutable, appended exactly once, partitioned by event date."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.config import EventsSpec, LabelsSpec, Settings
from lambdaflow.paths import MASTER_EVENTS, MASTER_LABELS, table_uri
from lambdaflow.schemas import INGEST_SEQ, INGESTED_AT, KAFKA_OFFSET, KAFKA_PARTITION, fields_schema, master_schema, with_ingest_fields
from lambdaflow.tables import Table


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
