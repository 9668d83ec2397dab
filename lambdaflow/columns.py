"""The system columns: one place for every column name Lambdaflow adds to its tables.

Kept free of imports so that configuration checks (no event field may take one
of these names) and schemas can both use it. See docs/architecture.md §3.
"""

from __future__ import annotations

__all__ = ["BATCH_WATERMARK", "BUCKET", "INGESTED_AT", "INGEST_SEQ", "KAFKA_OFFSET", "KAFKA_PARTITION", "RESERVED_COLUMNS"]

#: Micro-batch sequence number ``s`` of the speed layer that ingested a row (docs/architecture.md §4).
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

#: No event field may be named like a system column.
RESERVED_COLUMNS: frozenset[str] = frozenset({INGEST_SEQ, KAFKA_PARTITION, KAFKA_OFFSET, INGESTED_AT, BUCKET, BATCH_WATERMARK})
