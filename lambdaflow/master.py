"""The master dataset: ``master/events``, immutable, appended exactly once, partitioned by event date."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.config import EventsSpec, Settings
from lambdaflow.paths import MASTER_EVENTS, table_uri
from lambdaflow.schemas import INGEST_SEQ, INGESTED_AT, KAFKA_OFFSET, KAFKA_PARTITION, master_schema
from lambdaflow.tables import Table


def events_table(settings: Settings, create: bool = True) -> Table:
    """The ``master/events`` table, created with its schema if missing (when ``create``)."""
    table = Table(table_uri(settings.profile, MASTER_EVENTS))
    if create:
        events = settings.pipeline.events
        table.create(master_schema(events), [events.date_partition], name="master_events")
    return table


def to_master_rows(
    events: pa.Table,
    spec: EventsSpec,
    seq: int,
    kafka_partitions: pa.Array | None = None,
    kafka_offsets: pa.Array | None = None,
    ingested_at: dt.datetime | None = None,
) -> pa.Table:
    """Valid events as ``master/events`` rows of micro-batch ``seq``."""
    n = events.num_rows
    schema = master_schema(spec)
    when = ingested_at or dt.datetime.now(dt.timezone.utc)
    columns = {name: events.column(name) for name in spec.fields}
    columns[INGEST_SEQ] = pa.array(np.full(n, seq, np.int64))
    columns[KAFKA_PARTITION] = kafka_partitions if kafka_partitions is not None else pa.nulls(n, pa.int32())
    columns[KAFKA_OFFSET] = kafka_offsets if kafka_offsets is not None else pa.nulls(n, pa.int64())
    columns[INGESTED_AT] = pa.array([when] * n, pa.timestamp("us", tz="UTC"))
    columns[spec.date_partition] = pc.cast(pc.cast(events.column(spec.time_column), pa.timestamp("us", tz="UTC")), pa.date32())
    return pa.table(columns).cast(schema)
