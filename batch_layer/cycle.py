"""The batch cycle: its non-Spark steps (snapshot, publish, expire, maintain) and all of it in order (:func:`run_cycle`).

Each step is idempotent: running it again leaves the same tables.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from batch_layer.views import expire_speed_rows
from lambdaflow.config import Settings
from lambdaflow.contracts.batch import RUNS_SCHEMA, publish_history, published_commit
from lambdaflow.contracts.commits import MASTER_VERSION_KEY, WATERMARK_KEY
from lambdaflow.contracts.master import events_table
from lambdaflow.contracts.paths import RUNS, batch_view, existing_tables, table_uri
from lambdaflow.errors import CycleError, TableError
from lambdaflow.tables import Table, TableMissingError, Txn, maintenance
from lambdaflow.views import compile_views

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


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

    versions, watermarks = {}, set()
    for name in compile_views(settings.pipeline):
        table = Table(table_uri(settings.profile, batch_view(name)))
        try:
            commit = published_commit(table) if table.exists() else None
        except TableError:
            commit = None
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
        {
            "run_id": [run_id],
            "master_version": [master_version],
            "watermark": [watermark],
            "published_at": [dt.datetime.now(dt.timezone.utc)],
            "views": [json.dumps(versions)],
        },
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
            metrics = maintenance.compact(table)
            result["files_removed"] = metrics.get("numFilesRemoved", 0)
            result["files_added"] = metrics.get("numFilesAdded", 0)
        maintenance.checkpoint(table)
        result["vacuumed"] = len(maintenance.vacuum(table, retention_hours=retention_hours))
        out[name] = result
    return out


def watermarks(settings: Settings) -> dict[str, list[int]]:
    """Published watermarks per view, newest first (for reports)."""
    return {n: publish_history(Table(table_uri(settings.profile, batch_view(n)))) for n in compile_views(settings.pipeline)}


#: The steps of one batch cycle, in the order the ``lambdaflow_batch`` DAG runs them.
STEPS = (
    "snapshot",
    "recompute_views",
    "build_training_set",
    "train_evaluate_promote",
    "publish_watermark",
    "expire_speed_rows",
    "maintenance",
)


def run_cycle(
    settings: Settings,
    spark: SparkSession,
    run_id: str | None = None,
    on_step: Callable[[str, Any], None] | None = None,
) -> dict[str, Any]:
    """Run every step of the batch cycle in this process, in the DAG's order, with the same functions.

    What ``lambdaflow batch run`` does; the ``lambdaflow_batch`` DAG runs the same
    steps as separate tasks (the Spark ones through spark-submit). Steps the
    pipeline has nothing for (no labels: no training set; no model: no training)
    are skipped.

    Args:
        run_id: recorded in ``batch/_runs`` (default: ``manual__<UTC time>``).
        on_step: called with each step's name and result as it finishes.

    Returns:
        Each step's result, by step name.

    Raises:
        TableMissingError: nothing was ingested yet.
        CycleError: the views were not all published from the snapshot.
    """
    from batch_layer.train import train
    from batch_layer.training import build_training_set
    from batch_layer.views import recompute_views

    run_id = run_id or f"manual__{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}"
    pipeline = settings.pipeline
    master_version = snapshot(settings)["master_version"]
    results: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("snapshot", lambda: {"master_version": master_version}),
        ("recompute_views", lambda: recompute_views(settings, spark, master_version)),
    ]
    if pipeline.labels is not None:
        steps.append(("build_training_set", lambda: build_training_set(settings, spark, master_version)))
        if pipeline.model is not None:
            steps.append(("train_evaluate_promote", lambda: train(settings, spark)))
    steps += [
        ("publish_watermark", lambda: publish(settings, run_id, master_version)),
        ("expire_speed_rows", lambda: expire(settings)),
        ("maintenance", lambda: maintain(settings)),
    ]
    for name, step in steps:
        results[name] = step()
        if on_step is not None:
            on_step(name, results[name])
    return results
