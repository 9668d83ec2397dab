"""Batch views: every declared view recomputed by Spark from one snapshot of ``master/events``.

A run reads ``master/events`` at one Delta version, records the watermark
``W`` = max ``_ingest_seq`` in it, removes duplicate deliveries by event id
(keeping the first ingested copy), computes each view's partial state with the
shared compiler (:mod:`lambdaflow.views`) and replaces ``batch/<view>`` in one
commit per table. ``W`` is stored in every row (``_batch_watermark``) and in the
commit metadata, which is where the serving layer reads it from.

A run is skipped for a view already computed at this or a newer master version
with the same definition (Delta ``txn``: app id = view + definition
fingerprint, version = master version); ``force`` recomputes anyway.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from lambdaflow.config import Settings
from lambdaflow.contracts.batch import batch_table_schema, expiry_horizon, view_fingerprint
from lambdaflow.contracts.commits import EXPIRED_THROUGH_KEY, MASTER_VERSION_KEY, VIEW_FINGERPRINT_KEY, WATERMARK_KEY
from lambdaflow.contracts.master import events_table, first_copies_spark
from lambdaflow.contracts.paths import batch_view, speed_view, table_uri
from lambdaflow.faults import crash_point
from lambdaflow.schemas import BATCH_WATERMARK, INGEST_SEQ
from lambdaflow.spark import first_row
from lambdaflow.tables import ConcurrentCommitError, Table, TableMissingError, Txn, stage_spark
from lambdaflow.views import CompiledView, compile_views

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

OPERATION = "batch-views"


@dataclass
class ViewResult:
    table_version: int
    rows: int
    skipped: bool


@dataclass
class BatchViewsReport:
    """What a recompute did."""

    master_version: int
    watermark: int
    events: int
    duplicates_removed: int
    seconds: float = 0.0
    views: dict[str, ViewResult] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def recompute_views(
    settings: Settings,
    spark: SparkSession,
    master_version: int | None = None,
    views: list[str] | None = None,
    force: bool = False,
) -> BatchViewsReport:
    """Recompute batch views from one snapshot of ``master/events``.

    Args:
        settings: pipeline and profile.
        spark: the session to run on (local or cluster).
        master_version: the snapshot to read (default: the latest).
        views: names of the views to recompute (default: all).
        force: recompute even if this snapshot was already computed.

    Raises:
        TableMissingError: ``master/events`` does not exist yet.
        KeyError: an unknown view name.
    """
    from pyspark.sql import functions as F

    started = time.monotonic()
    master = events_table(settings, create=False)
    if not master.exists():
        raise TableMissingError(f"{master.uri} does not exist yet: ingest events with the speed layer first")
    snap = master.snapshot(master_version)
    compiled = compile_views(settings.pipeline)
    chosen = [compiled[name] for name in views] if views else list(compiled.values())
    events = snap.to_spark(spark)
    stats = first_row(events.agg(F.count(F.lit(1)).alias("n"), F.max(INGEST_SEQ).alias("w")))
    watermark = int(stats["w"]) if stats["w"] is not None else -1
    unique = first_copies_spark(events, settings.pipeline.events.id_column, settings.pipeline.events.time_column).persist()
    try:
        n_unique = unique.count()
        report = BatchViewsReport(snap.version, watermark, n_unique, int(stats["n"]) - n_unique)
        # Phase 1, the slow part: Spark computes and writes every view's files, none committed yet.
        # A job killed here leaves every published view untouched (vacuum removes the orphans).
        staged = [_stage(settings, view, unique, snap.version, watermark, force) for view in chosen]
        crash_point("batch-views:staged")
        # Phase 2, milliseconds: one commit per view.
        for view, (table, files, txn, skipped) in zip(chosen, staged):
            report.views[view.name] = _commit(table, files, txn, skipped, snap.version, watermark, view)
    finally:
        unique.unpersist()
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _stage(
    settings: Settings, view: CompiledView, events: DataFrame, master_version: int, watermark: int, force: bool
) -> tuple[Table, list[Any], Txn | None, bool]:
    from pyspark.sql import functions as F

    table = Table(table_uri(settings.profile, batch_view(view.name)))
    table.create(batch_table_schema(view), name=f"batch_{view.name}", description=f"batch view {view.name} ({view_fingerprint(view)})")
    txn = None if force else Txn(f"{OPERATION}/{view.name}/{view_fingerprint(view)}", master_version)
    done = txn is not None and (table.txn_version(txn.app_id) or -1) >= txn.version
    if done:
        return table, [], txn, True
    partials = view.partials_spark(events).withColumn(BATCH_WATERMARK, F.lit(watermark).cast("bigint"))
    return table, stage_spark(table, partials), txn, False


def _commit(
    table: Table, files: list[Any], txn: Txn | None, skipped: bool, master_version: int, watermark: int, view: CompiledView
) -> ViewResult:
    if skipped:
        version = table.version()
        return ViewResult(version, table.snapshot(version).num_records, True)
    metadata = {WATERMARK_KEY: watermark, MASTER_VERSION_KEY: master_version, VIEW_FINGERPRINT_KEY: view_fingerprint(view)}
    result = table.commit_files(files, "overwrite", txn=txn, metadata=metadata, operation=OPERATION)
    return ViewResult(result.version, table.snapshot(result.version).num_records, result.skipped)


def expire_speed_rows(settings: Settings) -> dict[str, int]:
    """Drop speed partials that the batch views have absorbed, one batch run late.

    Rows with ``_ingest_seq`` ≤ the watermark of the *previous* publish are
    removed: a reader still holding the previous batch snapshot (W_prev) needs
    exactly the rows after W_prev, so lagging one run never opens a gap
    (docs/architecture.md §4).

    Returns:
        Per view, the watermark up to which rows were expired (-1: nothing yet).
    """
    import pyarrow.compute as pc

    out = {}
    for name in compile_views(settings.pipeline):
        batch = Table(table_uri(settings.profile, batch_view(name)))
        speed = Table(table_uri(settings.profile, speed_view(name)))
        previous = expiry_horizon(batch)
        if previous >= 0 and speed.exists():
            for attempt in range(5):  # the speed layer may commit in between: retry on a fresh snapshot
                try:
                    speed.delete_rows(pc.field(INGEST_SEQ) <= previous, metadata={EXPIRED_THROUGH_KEY: previous}, operation="speed-expiry")
                    break
                except ConcurrentCommitError:
                    if attempt == 4:
                        raise
        out[name] = previous
    return out
