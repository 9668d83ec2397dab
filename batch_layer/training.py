"""Point-in-time training sets: for every labelled event, the features the speed layer computed for it.

Features come from :class:`lambdaflow.features.FeatureFunction`, the same
function the speed layer scores with, run by Spark over all of a key's events
(``repartition`` by the view key, then one call per Spark partition), so an
event only sees the events of its key that precede it in ingest order.

Labels: an event is in the training set when it happened at least
``labels.maturity`` before the cut-off; its label is positive when a label
arrived by the cut-off, negative otherwise. Labels that arrive after the
cut-off are ignored — no label leakage.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.config import Settings
from lambdaflow.contracts.batch import LABEL, training_schema
from lambdaflow.contracts.commits import CUTOFF_KEY, MASTER_VERSION_KEY, WATERMARK_KEY
from lambdaflow.contracts.master import events_table, first_copies_spark
from lambdaflow.contracts.paths import MASTER_LABELS, TRAINING_SET, table_uri
from lambdaflow.errors import TrainingError
from lambdaflow.features import FeatureFunction
from lambdaflow.schemas import INGEST_SEQ, INGESTED_AT
from lambdaflow.spark import first_row
from lambdaflow.tables import Table, TableMissingError, Txn, write_spark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass
class TrainingSetReport:
    master_version: int
    watermark: int
    cutoff: str
    rows: int
    positives: int
    table_version: int
    seconds: float


#: Prefix of the columns that carry a view-key group's features into the final pass (never an event field).
_SIDE = "__feature__"
#: Boolean column marking rows that are featurised but add to no state (batch_layer/consistency.py); optional.
OBSERVER = "__observer"


def _observers(table: pa.Table) -> np.ndarray | None:
    if OBSERVER not in table.column_names:
        return None
    return np.asarray(table.column(OBSERVER).fill_null(False).to_numpy(zero_copy_only=False), bool)


def _group_partition(
    settings: Settings, keys: tuple[str, ...], out_schema: pa.Schema
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """One Spark partition, holding every event of its view keys: the event id and that group's view features."""
    pipeline = settings.pipeline

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        collected = [b for b in batches if b.num_rows]
        if not collected:
            return
        table = pa.Table.from_batches(collected)
        values = FeatureFunction(pipeline).view_values(table, keys=keys, observers=_observers(table))
        columns = {pipeline.events.id_column: table.column(pipeline.events.id_column)}
        columns.update({_SIDE + name: pa.array(v, pa.float64()) for name, v in values.items()})
        yield from pa.table(columns).cast(out_schema).to_batches()

    return run


def _featurize_partition(
    settings: Settings, out_schema: pa.Schema, side: list[str]
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """One Spark partition, holding every event of its partition keys: the partition-key features, the side groups' as joined."""
    pipeline = settings.pipeline
    ev = pipeline.events

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        collected = [b for b in batches if b.num_rows]
        if not collected:  # an empty Spark partition
            return
        table = pa.Table.from_batches(collected)
        ff = FeatureFunction(pipeline)
        values = ff.view_values(table, keys=(ev.partition_key,), observers=_observers(table))  # all preceding events of each key are here
        values.update({name: table.column(_SIDE + name).to_numpy(zero_copy_only=False) for name in side})
        features = ff.assemble(table, values)
        ids = [ev.id_column, ev.partition_key, ev.time_column, INGEST_SEQ]
        result = pa.table({**{c: table.column(c) for c in ids}, **{c: features.column(c) for c in features.column_names}})
        yield from result.cast(pa.schema(list(out_schema)[: len(ids) + len(features.column_names)])).to_batches()

    return run


def featurize(settings: Settings, events: DataFrame) -> DataFrame:
    """Features of every event (ids unique), computed per view key in ingest order by the shared feature function.

    Features of views keyed by the partition key come from one pass over the events grouped by it. Each other
    view key (e.g. the merchant) gets a pass of its own, grouped by that key, whose values are joined back by
    event id: an as-of join in ingest order, since each value was computed at its event's own position.
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    ff = FeatureFunction(settings.pipeline)
    schema = training_schema(ff, settings)
    without_label = pa.schema([f for f in schema if f.name != LABEL])
    ev = settings.pipeline.events
    partitions = int(events.sparkSession.conf.get("spark.sql.shuffle.partitions") or 4)
    rows, side = events, []
    for keys, names in ff.key_groups.items():
        if keys == (ev.partition_key,):
            continue
        group_schema = pa.schema([without_label.field(ev.id_column), *(pa.field(_SIDE + n, pa.float64()) for n in names)])
        values = events.repartition(partitions, *keys).mapInArrow(
            _group_partition(settings, keys, group_schema), from_arrow_schema(group_schema)
        )
        rows = rows.join(values, on=ev.id_column, how="left")
        side += names
    return rows.repartition(partitions, ev.partition_key).mapInArrow(
        _featurize_partition(settings, without_label, side), from_arrow_schema(without_label)
    )


def labelled(settings: Settings, spark: SparkSession, cutoff: dt.datetime, watermark: int) -> DataFrame | None:
    """Event ids with a positive label known by ``cutoff`` (None when no label table exists).

    Known: reported by the cut-off, and ingested by micro-batch ``watermark`` — the labels table is not
    pinned to the master snapshot, but labels land in the same micro-batches as events, so the
    snapshot's W pins them too.
    """
    from pyspark.sql import functions as F

    spec = settings.pipeline.labels
    table = Table(table_uri(settings.profile, MASTER_LABELS))
    if spec is None or not table.exists():
        return None
    labels = table.snapshot().to_spark(spark)
    known = (F.col(spec.time_column) <= F.lit(cutoff)) & (F.col(INGEST_SEQ) <= F.lit(watermark))
    arrived = labels.where(known).where(F.col(spec.label_column))
    return arrived.select(F.col(spec.event_id_column).alias("__labelled_id")).distinct()


def build_training_set(
    settings: Settings,
    spark: SparkSession,
    master_version: int | None = None,
    cutoff: dt.datetime | None = None,
) -> TrainingSetReport:
    """Write ``batch/_training_set`` from one master snapshot and the labels known at ``cutoff``.

    Args:
        cutoff: what is known; defaults to the snapshot's ingest time (its newest ``_ingested_at``),
            the batch run's logical time as far as the data goes.

    Raises:
        TableMissingError: ``master/events`` does not exist yet.
        TrainingError: the pipeline declares no labels.
    """
    from pyspark.sql import functions as F

    started = time.monotonic()
    spec = settings.pipeline.labels
    if spec is None:
        raise TrainingError("the pipeline has no 'labels' section: nothing to learn from")
    ev = settings.pipeline.events
    master = events_table(settings, create=False)
    if not master.exists():
        raise TableMissingError(f"{master.uri} does not exist yet: ingest events with the speed layer first")
    snap = master.snapshot(master_version)
    events = first_copies_spark(snap.to_spark(spark), ev.id_column, ev.time_column)
    bounds = first_row(events.agg(F.max(INGESTED_AT).alias("known"), F.max(INGEST_SEQ).alias("w")))
    # what the snapshot knew: its newest ingest time, never the data's largest event time (one
    # event dated 2099 would make every unlabelled event look mature)
    if cutoff is None and bounds["known"] is None:
        raise TrainingError(f"{master.uri} v{snap.version} records no ingest time: pass the cut-off explicitly (--cutoff)")
    cutoff = cutoff or bounds["known"].replace(tzinfo=dt.timezone.utc)
    watermark = int(bounds["w"])
    mature_before = cutoff - dt.timedelta(seconds=spec.maturity)
    # every event of the snapshot feeds the state, as in the speed layer (an event a little ahead of the
    # ingest clock was accepted there too); only which rows become training rows depends on the cut-off
    feats = featurize(settings, events)
    rows = feats.where(F.col(ev.time_column) <= F.lit(mature_before))
    positives = labelled(settings, spark, cutoff, watermark)
    if positives is None:
        rows = rows.withColumn(LABEL, F.lit(0).cast("int"))
    else:
        rows = rows.join(F.broadcast(positives), rows[ev.id_column] == positives["__labelled_id"], "left")
        rows = rows.withColumn(LABEL, F.col("__labelled_id").isNotNull().cast("int")).drop("__labelled_id")
    table = Table(table_uri(settings.profile, TRAINING_SET))
    ff = FeatureFunction(settings.pipeline)
    table.create(training_schema(ff, settings), name="training_set")
    metadata = {CUTOFF_KEY: cutoff.isoformat(), WATERMARK_KEY: watermark, MASTER_VERSION_KEY: snap.version}
    # built once per (definition, master version, cut-off): a rerun of the task leaves the table as it is
    txn = Txn(f"training-set/{definition_fingerprint(settings)}/{cutoff.isoformat()}", snap.version)
    result = write_spark(table, rows, "overwrite", metadata=metadata, operation="training-set", txn=txn)
    written = table.snapshot(result.version)
    label_counts = written.to_arrow(columns=[LABEL]).column(LABEL)
    return TrainingSetReport(
        snap.version,
        watermark,
        cutoff.isoformat(),
        written.num_records,
        int(pc.sum(label_counts).as_py() or 0),
        result.version,
        round(time.monotonic() - started, 2),
    )


def definition_fingerprint(settings: Settings) -> str:
    """A short hash of everything a training set depends on besides the data."""
    import hashlib

    p = settings.pipeline
    text = (
        "|".join(m.model_dump_json() if m is not None else "" for m in (p.events, p.labels))
        + "|"
        + "|".join(f.model_dump_json() for f in p.features)
    )
    text += "|" + "|".join(v.model_dump_json() for v in p.views)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def report_dict(report: TrainingSetReport) -> dict:
    return asdict(report)
