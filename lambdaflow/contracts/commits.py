"""Commit metadata: the keys Lambdaflow writes into Delta commits, and the speed layer's writer identity.

Every key is spelled here once. Readers and writers in every layer import these
constants; a key written under one name and read under another cannot happen.
See docs/architecture.md §3 (tables) and §5 (exactly once).
"""

from __future__ import annotations

from lambdaflow.config import Settings

__all__ = [
    "APP_KEY",
    "CUTOFF_KEY",
    "DUPLICATES_KEY",
    "EPOCH_KEY",
    "EXPIRED_THROUGH_KEY",
    "INGESTED_AT_KEY",
    "MASTER_VERSION_KEY",
    "OFFSETS_END_KEY",
    "OFFSETS_LAST_KEY",
    "OFFSETS_START_KEY",
    "Offsets",
    "RECORDS_KEY",
    "SEQ_KEY",
    "VALID_KEY",
    "VIEW_FINGERPRINT_KEY",
    "WATERMARK_KEY",
    "app_id",
    "writer_ids",
]

#: Batch-view, training-set commits: the watermark W (largest ``_ingest_seq``) of the master snapshot read.
WATERMARK_KEY = "lambdaflow.watermark"
#: Batch-view, training-set commits: the Delta version of ``master/events`` that was read.
MASTER_VERSION_KEY = "lambdaflow.master_version"
#: Batch-view commits: fingerprint of the view definition the rows were computed with.
VIEW_FINGERPRINT_KEY = "lambdaflow.view_fingerprint"
#: Training-set commits: what was known (labels and maturity are judged at this time).
CUTOFF_KEY = "lambdaflow.cutoff"
#: Speed-expiry commits: speed rows with ``_ingest_seq`` ≤ this were removed.
EXPIRED_THROUGH_KEY = "lambdaflow.expired_through"

#: ``master/events`` commits of the speed layer: the micro-batch sequence number ``s``.
SEQ_KEY = "lambdaflow.seq"
#: ``master/events`` commits of the speed layer: the writer identity (see :func:`app_id`).
APP_KEY = "lambdaflow.app"
#: ``master/events`` commits of the speed layer: when the writing process took up its identity (ns since the
#: epoch); of two processes with one identity, the later one wins (speed_layer/fencing.py).
EPOCH_KEY = "lambdaflow.epoch"
#: ``master/events`` commits: next offset per topic/partition after this batch (cumulative over all batches).
OFFSETS_END_KEY = "lambdaflow.offsets.end"
#: ``master/events`` commits: fingerprint of the last ingested record per topic/partition (cumulative), to
#: recognise a recreated topic whose new log reaches past the recorded position.
OFFSETS_LAST_KEY = "lambdaflow.offsets.last"
#: ``master/events`` commits: first offset of this batch per topic/partition.
OFFSETS_START_KEY = "lambdaflow.offsets.start"
#: ``master/events`` commits: the batch's ingest time (ISO 8601); a replay validates against the same time.
INGESTED_AT_KEY = "lambdaflow.ingested_at"
#: ``master/events`` commits: records consumed and records valid in the batch.
RECORDS_KEY = "lambdaflow.records"
VALID_KEY = "lambdaflow.valid"
#: ``master/events`` commits: repeated deliveries of already-ingested events, dropped (not appended).
DUPLICATES_KEY = "lambdaflow.duplicates"

#: topic → partition (as text, for JSON) → offset
Offsets = dict[str, dict[str, int]]


def app_id(settings: Settings, instance: int | None = None) -> str:
    """A speed-layer writer identity in Delta ``txn`` actions: pipeline, consumer group and instance.

    Args:
        instance: the instance (default: the profile's ``speed.instance``, this process's own).
    """
    speed = settings.profile.speed
    return f"{settings.pipeline.name}/{speed.consumer_group}/{speed.instance if instance is None else instance}"


def writer_ids(settings: Settings) -> list[str]:
    """Every writer identity the profile allows (``speed.instances``): readers follow each one's progress."""
    return [app_id(settings, k) for k in range(settings.profile.speed.instances)]
