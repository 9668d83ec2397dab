"""The non-Spark steps of the batch cycle (run by Airflow tasks and the CLI): snapshot, publish, expire, maintain.

Each step is idempotent: running it again leaves the same tables.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pyarrow as pa

from batch_layer.views import expire_speed_rows, publish_history
from lambdaflow.config import Settings
from lambdaflow.master import events_table
from lambdaflow.paths import batch_view, existing_tables, table_uri
from lambdaflow.tables import Table, TableMissingError, Txn
from lambdaflow.views import compile_views

log = logging.getLogger(__name__)
#: One row per completed batch cycle.
RUNS = "batch/_runs"
RUNS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("master_version", pa.int64()),
        ("watermark", pa.int64()),
        ("published_at", pa.timestamp("us", tz="UTC")),
        ("views", pa.string()),
    ]
)


class CycleError(RuntimeError):
    """The batch cycle found the tables in a state it must not publish."""


def snapshot(settings: Settings) -> dict[str, int]:
    """Pin the master version every task of this run reads (so they all see the same data)."""
    master = events_table(settings, create=False)
    if not master.exists():
        raise TableMissingError(f"{master.uri} does not exist yet: the speed layer has not ingested anything")
    version = master.version()
    return {"master_version": version}


def publish(settings: Settings, run_id: str, master_version: int) -> dict[str, Any]:
    """Check that every batch view was published from ``master_version`` and record the run (once per run id)."""
    import json

    from batch_layer.views import MASTER_VERSION_KEY, WATERMARK_KEY

    versions, watermarks = {}, set()
    for name in compile_views(settings.pipeline):
        table = Table(table_uri(settings.profile, batch_view(name)))
        commit = next((c for c in table.history() if WATERMARK_KEY in c), None)
        if commit is None or int(commit[MASTER_VERSION_KEY]) < master_version:
            raise CycleError(f"batch view {name} was not recomputed from master v{master_version}; rerun recompute_views")
        versions[name] = table.version()
        watermarks.add(int(commit[WATERMARK_KEY]))
    if len(watermarks) != 1:
        raise CycleError(f"batch views disagree on the watermark: {sorted(watermarks)}")
    watermark = watermarks.pop()
    runs = Table(table_uri(settings.profile, RUNS))
    runs.create(RUNS_SCHEMA, name="batch_runs")
    row = pa.table(
        {"run_id": [run_id], "master_version": [master_version], "watermark": [watermark],
         "published_at": [dt.datetime.now(dt.timezone.utc)], "views": [json.dumps(versions)]},
        schema=RUNS_SCHEMA,
    )
    # txn keyed by the run: a retried publish task records the run once
    runs.append(row, txn=Txn(f"publish/{run_id}", 1), operation="batch-publish")
    return {"watermark": watermark, "views": versions}


def expire(settings: Settings) -> dict[str, int]:
    """Drop speed partials absorbed by the previous run (see :func:`batch_layer.views.expire_speed_rows`)."""
    return expire_speed_rows(settings)


def maintain(settings: Settings, retention_hours: int = 168, compact: bool = True) -> dict[str, dict[str, Any]]:
    """Compact small files, write a checkpoint and vacuum every table (safe while the layers run)."""
    out = {}
    for name, uri in existing_tables(settings.profile):
        table = Table(uri)
        result: dict[str, Any] = {}
        if compact:
            metrics = table.compact()
            result["files_removed"] = metrics.get("numFilesRemoved", 0)
            result["files_added"] = metrics.get("numFilesAdded", 0)
        table.checkpoint()
        result["vacuumed"] = len(table.vacuum(retention_hours=retention_hours))
        out[name] = result
    return out


def watermarks(settings: Settings) -> dict[str, list[int]]:
    """Published watermarks per view, newest first (for reports)."""
    return {n: publish_history(Table(table_uri(settings.profile, batch_view(n)))) for n in compile_views(settings.pipeline)}
