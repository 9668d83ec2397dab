"""Arrow schemas derived from the pipeline: events, the master table's system columns, declared field types.

The system column names live in :mod:`lambdaflow.columns` and are re-exported here.
"""

from __future__ import annotations

import pyarrow as pa

from lambdaflow.columns import BATCH_WATERMARK, BUCKET, INGEST_SEQ, INGESTED_AT, KAFKA_OFFSET, KAFKA_PARTITION
from lambdaflow.config import EventsSpec, FieldSpec

__all__ = [
    "BATCH_WATERMARK",
    "BUCKET",
    "INGESTED_AT",
    "INGEST_FIELDS",
    "INGEST_SEQ",
    "KAFKA_OFFSET",
    "KAFKA_PARTITION",
    "arrow_type",
    "event_schema",
    "fields_schema",
    "master_schema",
    "with_ingest_fields",
]

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int32(),
    "long": pa.int64(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}


def arrow_type(spec: FieldSpec) -> pa.DataType:
    """The Arrow type of a declared field."""
    return _ARROW_TYPES[spec.type]


def fields_schema(fields: dict[str, FieldSpec]) -> pa.Schema:
    """Arrow schema of declared fields, in declaration order."""
    return pa.schema([pa.field(name, arrow_type(spec), spec.nullable) for name, spec in fields.items()])


def event_schema(events: EventsSpec) -> pa.Schema:
    """Arrow schema of a valid event."""
    return fields_schema(events.fields)


#: The columns the speed layer adds to every record it ingests (master events and labels alike).
INGEST_FIELDS: tuple[pa.Field, ...] = (
    pa.field(INGEST_SEQ, pa.int64(), False),
    pa.field(KAFKA_PARTITION, pa.int32(), True),
    pa.field(KAFKA_OFFSET, pa.int64(), True),
    pa.field(INGESTED_AT, pa.timestamp("us", tz="UTC"), True),
)


def with_ingest_fields(schema: pa.Schema) -> pa.Schema:
    """A record schema followed by the ingest coordinates."""
    return pa.schema([*schema, *INGEST_FIELDS])


def master_schema(events: EventsSpec) -> pa.Schema:
    """Schema of ``master/events``: the event, its ingest coordinates and the date partition column."""
    return with_ingest_fields(event_schema(events)).append(pa.field(events.date_partition, pa.date32(), False))
