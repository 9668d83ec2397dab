"""Online/offline consistency, measured as Chronon does: served vectors recomputed with the training-set code.

Sources: the vectors the API served (``serving/feature_log``: ``/features`` and ``/score``) and a sample of the
speed layer's predictions (each stores the vector it scored with). Offline, every one is recomputed by
:func:`batch_layer.training.featurize` over a master snapshot:

* a prediction's event is in master: its training-set row is its vector at its own position in ingest order;
* a served vector's event is placed right after micro-batch ``as_of_seq`` (the snapshot it was served from)
  as an *observer*: featurised like an event, adding nothing to any state, so it sees exactly the master
  events up to ``as_of_seq``.

Per source and feature: the mismatch rate (not equal to 1e-9 relative), the missing rate (missing online,
present offline) and the mean relative error. They go to ``serving/feature_consistency`` (SQL view
``feature_consistency``: the latest run), a plot, and a Prometheus text file for node_exporter.
"""

from __future__ import annotations

import datetime as dt
import io
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_layer.training import OBSERVER, featurize
from lambdaflow import storage
from lambdaflow.config import Settings
from lambdaflow.contracts.consistency import (
    DEFAULT_MAX_ROWS,
    DEFAULT_SAMPLE,
    LOG_ID,
    compare,
    consistency_schema,
    feature_fingerprint,
    results_rows,
)
from lambdaflow.contracts.master import events_table, first_copies_spark
from lambdaflow.contracts.paths import FEATURE_CONSISTENCY, FEATURE_LOG, PREDICTIONS, local_home, table_uri
from lambdaflow.features import FeatureFunction
from lambdaflow.schemas import INGEST_SEQ, event_schema
from lambdaflow.tables import Table, TableMissingError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["METRICS_FILE", "PLOT_FILE", "ConsistencyReport", "check_consistency"]

#: Under the storage root's file area (storage.files).
PLOT_FILE = "plots/feature-consistency.png"
#: Under the local home: a node_exporter text-file collector can read it.
METRICS_FILE = "metrics/feature_consistency.prom"


@dataclass
class ConsistencyReport:
    master_version: int
    checked_at: str
    compared: dict[str, int]
    mismatches: int
    #: per source: vectors left out because they were served under another feature list (a pipeline change)
    skipped: dict[str, int] = field(default_factory=dict)
    #: per source, per feature: the measures of :func:`lambdaflow.contracts.consistency.compare`
    results: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    plot: str | None = None
    seconds: float = 0.0


def check_consistency(
    settings: Settings,
    spark: SparkSession,
    sample: float = DEFAULT_SAMPLE,
    max_rows: int = DEFAULT_MAX_ROWS,
    master_version: int | None = None,
) -> ConsistencyReport:
    """Recompute a sample of served vectors offline and write the measures (see the module docstring).

    Args:
        sample: share of the speed layer's predictions checked (chosen by a hash of the event id: the same
            events every run); every logged API vector is checked, the newest ``max_rows`` at most.
        max_rows: most vectors per source.

    Raises:
        TableMissingError: ``master/events`` does not exist yet.
    """
    started = time.monotonic()
    ev = settings.pipeline.events
    ff = FeatureFunction(settings.pipeline)
    master = events_table(settings, create=False)
    if not master.exists():
        raise TableMissingError(f"{master.uri} does not exist yet: ingest events with the speed layer first")
    snap = master.snapshot(master_version)
    events = first_copies_spark(snap.to_spark(spark), ev.id_column, ev.time_column)
    top = int(events.agg({INGEST_SEQ: "max"}).collect()[0][0] or -1)
    served: dict[str, tuple[list[str], np.ndarray]] = {}
    skipped: dict[str, int] = {}
    predicted = _predictions(settings, spark, sample, max_rows, top, ff.names, skipped)
    if predicted is not None:
        served["predictions"] = predicted
    logged, probes = _logged(settings, max_rows, top, ff.names, skipped)
    served.update(logged)
    wanted = sorted({i for ids, _ in served.values() for i in ids})
    wanted_ids = _ids(spark, wanted, ev.id_column)
    interest = events.join(wanted_ids, ev.id_column, "left_semi")
    frame = None
    if probes is not None:
        from pyspark.sql.pandas.types import from_arrow_schema

        frame = spark.createDataFrame(probes.to_pandas(), schema=from_arrow_schema(probes.schema))
        interest = interest.unionByName(frame.drop(OBSERVER), allowMissingColumns=True)
    rows = _restrict(events, interest, [(ev.partition_key,), *ff.key_groups], ev.id_column).withColumn(OBSERVER, _false())
    if frame is not None:
        rows = rows.unionByName(frame, allowMissingColumns=True)
    offline = _offline(featurize(settings, rows), ev.id_column, wanted_ids, ff.names)
    checked_at = dt.datetime.now(dt.timezone.utc)
    triples = []
    for source, (ids, matrix) in sorted(served.items()):
        index = offline.reindex(ids)
        for j, name in enumerate(ff.names):
            triples.append((source, name, compare(matrix[:, j], index[name].to_numpy(np.float64))))
    table = Table(table_uri(settings.profile, FEATURE_CONSISTENCY))
    table.create(consistency_schema(), name="feature_consistency")
    if triples:
        table.append(results_rows(checked_at, snap.version, triples), operation="feature-consistency")
    report = ConsistencyReport(
        snap.version,
        checked_at.isoformat(),
        {s: len(ids) for s, (ids, _) in served.items()},
        sum(int(r["mismatches"] or 0) for _, _, r in triples),
        skipped,
        {s: {f: r for s2, f, r in triples if s2 == s} for s in served},
    )
    if triples:
        report.plot = _plot(settings, report)
        _write_metrics(settings, triples)
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _false() -> Any:
    from pyspark.sql import functions as F

    return F.lit(False)


def _predictions(
    settings: Settings, spark: SparkSession, sample: float, max_rows: int, top: int, names: list[str], skipped: dict[str, int]
) -> tuple[list[str], np.ndarray] | None:
    """A hash-chosen sample of the speed layer's predictions (event ids, vectors) of micro-batches up to ``top``."""
    from pyspark.sql import functions as F

    table = Table(table_uri(settings.profile, PREDICTIONS))
    if not table.exists():
        return None
    id_column = settings.pipeline.events.id_column
    frame = table.snapshot().to_spark(spark).where(F.col(INGEST_SEQ) <= top)
    chosen = frame.where(F.abs(F.xxhash64(F.col(id_column))) % 10_000 < int(sample * 10_000))
    picked = chosen.select(id_column, "features").limit(max_rows).toArrow()
    # predictions keep no feature names: a vector of another length was scored under another feature list
    fits = pc.equal(pc.list_value_length(picked.column("features")), len(names))
    picked = picked.filter(fits)
    if picked.num_rows < len(fits):
        skipped["predictions"] = len(fits) - picked.num_rows
    if picked.num_rows == 0:
        return None
    # one prediction per event is the speed layer's contract; keep the first should a table break it
    ids, first = np.unique(np.asarray(picked.column(id_column).to_pylist(), object), return_index=True)
    vectors = np.array(picked.column("features").to_pylist(), np.float64)[first]
    return [str(i) for i in ids], vectors


def _logged(
    settings: Settings, max_rows: int, top: int, names: list[str], skipped: dict[str, int]
) -> tuple[dict[str, tuple[list[str], np.ndarray]], pa.Table | None]:
    """The API's logged vectors served at or before ``top`` (per source), and their events as observer rows."""
    table = Table(table_uri(settings.profile, FEATURE_LOG))
    if not table.exists():
        return {}, None
    log = table.snapshot().to_arrow(filter=pc.field("as_of_seq") <= top)
    current = pc.equal(log.column("feature_list"), feature_fingerprint(names))
    for source, n in zip(*np.unique(np.asarray(log.filter(pc.invert(current)).column("source").to_pylist(), object), return_counts=True)):
        skipped[str(source)] = int(n)
    log = log.filter(current)
    if log.num_rows == 0:
        return {}, None
    log = log.sort_by([("logged_at", "descending")]).slice(0, max_rows * 2)
    out: dict[str, tuple[list[str], np.ndarray]] = {}
    for source in sorted(set(log.column("source").to_pylist())):
        part = log.filter(pc.equal(log.column("source"), source)).slice(0, max_rows)
        out[source] = (part.column(LOG_ID).to_pylist(), np.array(part.column("features").to_pylist(), np.float64))
    keep = pa.array(sorted({i for ids, _ in out.values() for i in ids}))
    log = log.filter(pc.is_in(log.column(LOG_ID), keep))
    ev = settings.pipeline.events
    schema = pa.schema([f.with_nullable(True) for f in event_schema(ev)])
    columns = {f.name: log.column(f.name).cast(f.type) for f in schema}
    columns[ev.id_column] = log.column(LOG_ID)  # the log row's own id: unique, and never an ingested event's
    columns[INGEST_SEQ] = log.column("as_of_seq")  # right after that micro-batch: Kafka coordinates are null, so last
    columns[OBSERVER] = pa.array(np.ones(log.num_rows, bool))
    return out, pa.table(columns)


def _ids(spark: SparkSession, ids: list[str], id_column: str) -> DataFrame:
    """A one-column frame of ``ids`` (small: at most ``max_rows`` per source)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    schema = StructType([StructField(id_column, StringType(), False)])
    return F.broadcast(spark.createDataFrame([(i,) for i in ids], schema))


def _restrict(events: DataFrame, interest: DataFrame, groups: list[tuple[str, ...]], id_column: str) -> DataFrame:
    """The events the vectors of ``interest`` depend on: every event sharing a view key with one of them.

    Featurising these alone gives each vector of interest exactly what all of master would (its keys' whole
    histories are here); other rows come out wrong and are never read. The check then costs the sampled
    keys' histories, not a pass over all of master.
    """
    from pyspark.sql import functions as F

    parts = []
    for keys in dict.fromkeys(groups):
        wanted = F.broadcast(interest.select(*[F.col(k).alias(f"__{k}") for k in keys]).distinct())
        match = None
        for k in keys:  # null-safe: a null partition key is a key of its own (events.null_keys: key)
            term = events[k].eqNullSafe(wanted[f"__{k}"])
            match = term if match is None else match & term
        parts.append(events.join(wanted, match, "left_semi"))
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out.dropDuplicates([id_column]) if len(parts) > 1 else out


def _offline(features: DataFrame, id_column: str, wanted: DataFrame, names: list[str]) -> Any:
    """The recomputed vectors of the ``wanted`` ids as a pandas frame indexed by id."""
    chosen = features.join(wanted, id_column, "left_semi").select(id_column, *names)
    frame: Any = chosen.toPandas()
    return frame.set_index(id_column)


def _plot(settings: Settings, report: ConsistencyReport) -> str:
    """Mismatch and missing rates per feature and source, as a PNG in the file area; returns its URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = sorted(report.results)
    names = list(next(iter(report.results.values())))
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(names) + 1.8), sharey=True)
    y = np.arange(len(names))
    height = 0.8 / max(len(sources), 1)
    for k, source in enumerate(sources):
        for ax, measure in zip(axes, ("mismatch_rate", "missing_rate")):
            values = [report.results[source][n][measure] or 0.0 for n in names]
            ax.barh(y + k * height, values, height, label=f"{source} ({report.compared[source]:,})")
    worst = max(
        (r[m] or 0.0 for res in report.results.values() for r in res.values() for m in ("mismatch_rate", "missing_rate")), default=0.0
    )
    for ax, title in zip(axes, ("mismatch rate", "missing rate")):
        ax.set_title(title)
        ax.set_xlim(0, max(0.05, min(1.0, worst * 1.1)))  # a 1% skew must show, not vanish on a 0..1 axis
        ax.set_yticks(y + 0.4 - height / 2, names)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"online/offline consistency, master v{report.master_version}, {report.checked_at}: {report.mismatches} mismatches")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    files = storage.files(settings.profile)
    files.write_bytes(PLOT_FILE, buffer.getvalue())
    return files.uri(PLOT_FILE)


def _write_metrics(settings: Settings, triples: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Gauges per source and feature in the Prometheus text format, replaced whole (written aside, then renamed)."""
    lines = []
    for metric, key in (("mismatch_rate", "mismatch_rate"), ("missing_rate", "missing_rate"), ("compared", "compared")):
        name = f"lambdaflow_feature_consistency_{metric}"
        lines.append(f"# TYPE {name} gauge")
        lines += [f'{name}{{source="{s}",feature="{f}"}} {float(r[key] or 0.0)}' for s, f, r in triples]
    path = local_home(settings.profile) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_suffix(".tmp")
    aside.write_text("\n".join(lines) + "\n")
    aside.replace(path)
