"""Arrow schemas derived from the pipeline: events, the master table and the system columns.

One place for every system column name; layers import these constants instead
of spelling the names again.
"""

from __future__ import annotations

import pyarrow as pa

from lambdaflow.config import EventsSpec, FieldSpec

#: Micro-batch sequence number ``s`` of the speed layer that ingested a row (DESIGN §3).
INGEST_SEQ = "_ingest_seq"
#: Kafka coordinates of the record a row came from.
KAFKA_PARTITION = "_kafka_partition"
KAFKA_OFFSET = "_kafka_offset"
#: When the speed layer ingested the row.
INGESTED_AT = "_ingested_at"
#: Start of a view's time bucket.
BUCKET = "_bucket"
#: The batch watermark W a batch-view row was computed at.
BATCH_WATERMARK = "_batch_watermark"

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
