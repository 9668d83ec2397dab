"""Train XGBoost on the training set with xgboost.spark, evaluate on a time-based holdout, register, promote.

The holdout is the latest ``model.holdout_fraction`` of the training period by
event time. The new model is registered in every case; it becomes the
``champion`` only if it beats the current champion **on the same holdout** by
``model.promotion_margin`` on ``model.promotion_metric`` — or, for the first
model, if it beats a trivial baseline (the training base rate for everyone).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lambdaflow import registry, storage
from lambdaflow.config import ModelSpec, Settings
from lambdaflow.contracts.batch import LABEL, published_commit
from lambdaflow.contracts.commits import CUTOFF_KEY, MASTER_VERSION_KEY, WATERMARK_KEY
from lambdaflow.contracts.paths import TRAINING_SET, table_uri
from lambdaflow.errors import TrainingError
from lambdaflow.features import FeatureFunction
from lambdaflow.scoring import predict
from lambdaflow.spark import first_row
from lambdaflow.tables import Table, TableMissingError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: Metrics where smaller is better.
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


@dataclass
class TrainReport:
    """What a training run did and decided."""

    run_id: str
    version: int
    promoted: bool
    reason: str
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    baseline_metrics: dict[str, float]
    train_rows: int
    holdout_rows: int
    positive_rate: float  # share of positive labels in the holdout
    watermark: int
    plot: str
    seconds: float = 0.0
    skipped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


def evaluate(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC-AUC, PR-AUC, log loss, Brier, precision/recall at the alert threshold, calibration error."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    p = np.clip(p, 1e-7, 1 - 1e-7)
    alert = p >= threshold
    tp = float((alert & (y == 1)).sum())
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(abs(p[bins == b].mean() - y[bins == b].mean()) * (bins == b).mean() for b in range(10) if (bins == b).any())
    both = len(np.unique(y)) > 1
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "precision_at_threshold": float(tp / alert.sum()) if alert.sum() else 0.0,
        "recall_at_threshold": float(tp / (y == 1).sum()) if (y == 1).sum() else 0.0,
        "expected_calibration_error": float(ece),
    }


def better(metric: str, new: float, old: float, margin: float) -> bool:
    """True when ``new`` beats ``old`` by more than ``margin`` on ``metric``."""
    return new < old - margin if metric in LOWER_IS_BETTER else new > old + margin


def split_by_time(frame: DataFrame, time_column: str, holdout_fraction: float) -> tuple[DataFrame, DataFrame, dt.datetime]:
    """Train on the earlier events, hold out the latest ``holdout_fraction`` of them by event time.

    The cut is a quantile of event time, not a share of the period between the first and the
    last event: one stray timestamp (an event dated 1970) cannot move it.
    """
    from pyspark.sql import functions as F

    micros = frame.select(F.unix_micros(F.col(time_column)).alias("t"))
    quantile = micros.approxQuantile("t", [1 - holdout_fraction], 0.0005)
    if not quantile:
        raise TrainingError("the training set is empty: nothing to split")
    cut = dt.datetime.fromtimestamp(quantile[0] / 1e6, dt.timezone.utc)
    return frame.where(F.col(time_column) < F.lit(cut)), frame.where(F.col(time_column) >= F.lit(cut)), cut


def _fit(model: ModelSpec, train: DataFrame, features: list[str], label_column: str) -> Any:
    from xgboost.spark import SparkXGBClassifier

    params: dict[str, Any] = dict(model.params)
    params.pop("objective", None)  # the classifier sets binary:logistic itself
    estimator = SparkXGBClassifier(
        features_col=features,
        label_col=label_column,
        num_workers=1,
        n_estimators=model.num_boost_round,
        missing=np.nan,
        verbose=False,
        **params,
    )
    return estimator.fit(train).get_booster()


def _plot(path: Path, y: np.ndarray, p: np.ndarray, booster: Any, features: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    fpr, tpr, _ = roc_curve(y, p)
    axes[0].plot(fpr, tpr)
    axes[0].plot([0, 1], [0, 1], "--", color="grey")
    axes[0].set(title="ROC", xlabel="false positive rate", ylabel="true positive rate")
    prec, rec, _ = precision_recall_curve(y, p)
    axes[1].plot(rec, prec)
    axes[1].axhline(y.mean(), ls="--", color="grey", label=f"base rate {y.mean():.3%}")
    axes[1].set(title="precision / recall", xlabel="recall", ylabel="precision")
    axes[1].legend()
    gains = booster.get_score(importance_type="gain")
    named = {features[int(k[1:])] if k.startswith("f") and k[1:].isdigit() else k: v for k, v in gains.items()}
    order = sorted(named, key=lambda k: named[k])
    axes[2].barh(order, [named[k] for k in order])
    axes[2].set(title="feature importance (gain)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train(
    settings: Settings,
    spark: SparkSession,
    shuffle_labels: bool = False,
    seed: int = 0,
) -> TrainReport:
    """Train, evaluate, register and maybe promote a model from ``batch/_training_set``.

    Args:
        shuffle_labels: train on permuted labels (a deliberately worse model, for testing promotion).
        seed: seed of the label permutation.

    Raises:
        TableMissingError: no training set was built yet.
        TrainingError: the pipeline declares no model, or the holdout has a single class.
    """
    from pyspark.sql import functions as F

    started = time.monotonic()
    spec = settings.pipeline.model
    if spec is None:
        raise TrainingError("the pipeline has no 'model' section")
    ff = FeatureFunction(settings.pipeline)
    table = Table(table_uri(settings.profile, TRAINING_SET))
    if not table.exists():
        raise TableMissingError(f"{table.uri} does not exist: run `lambdaflow batch training-set` first")
    snap = table.snapshot()
    commit = published_commit(table, snap.version)
    # what was trained on, not the table version: maintenance adds versions with the same rows
    training_key = f"{commit[MASTER_VERSION_KEY]}:{commit[CUTOFF_KEY]}:{registry.params_fingerprint(spec)}"
    done = registry.find_version(settings, "training_key", training_key)
    if done is not None and not shuffle_labels:  # this training set was already trained with these parameters
        return _already_trained(settings, done, started)
    watermark = int(commit[WATERMARK_KEY])
    frame = snap.to_spark(spark)
    time_column = settings.pipeline.events.time_column
    train_df, holdout_df, cut = split_by_time(frame, time_column, spec.holdout_fraction)
    label_col = LABEL
    base_rate = float(first_row(train_df.agg(F.avg(LABEL)))[0] or 0.0)
    if shuffle_labels:  # labels drawn independently of the features, at the same base rate
        train_df = train_df.withColumn(LABEL, (F.rand(seed) < F.lit(base_rate)).cast("int"))
    train_rows = train_df.count()
    # one partition in a fixed row order: `subsample` draws rows by position, so the same training set
    # (and seed) must give the same model, run after run (coalesce would break xgboost's barrier stage)
    ordered = train_df.repartition(1).sortWithinPartitions(settings.pipeline.events.id_column).select(*ff.names, label_col)
    booster = _fit(spec, ordered, ff.names, label_col)

    holdout: Any = holdout_df.select(*ff.names, LABEL).toPandas()
    x, y = holdout[ff.names].to_numpy(np.float64), holdout[LABEL].to_numpy()
    if len(np.unique(y)) < 2:
        raise TrainingError(
            f"the holdout ({len(y)} rows after {cut}) holds a single class: more data or a smaller holdout_fraction is needed"
        )
    scores = predict(booster, x)
    metrics = evaluate(y, scores, spec.alert_threshold)
    baseline = evaluate(y, np.full(len(y), base_rate), spec.alert_threshold)

    current = registry.champion_version(settings)
    champion_metrics, reason_prefix = None, ""
    if current is not None:
        try:
            champion = registry.load_version(settings, current)
            champion_metrics = evaluate(y, predict(champion.booster, x), spec.alert_threshold)
        except registry.ModelVerificationError as exc:  # a broken champion must not block a good model
            reason_prefix = f"champion v{current} cannot be evaluated ({exc}); "
    metric, margin = spec.promotion_metric, spec.promotion_margin
    reference = champion_metrics if champion_metrics is not None else baseline
    against = f"champion v{current}" if champion_metrics is not None else "the base-rate baseline"

    promoted = better(metric, metrics[metric], reference[metric], margin)
    reason = (
        f"{reason_prefix}{metric} {metrics[metric]:.4f} vs {against} {reference[metric]:.4f} "
        f"(margin {margin}): {'promoted' if promoted else 'not promoted'}"
    )

    c = registry.client(settings)
    run = c.create_run(registry.experiment_id(settings), run_name=f"train-W{watermark}")
    run_id = run.info.run_id
    params = {
        **{k: str(v) for k, v in spec.params.items()},
        "num_boost_round": spec.num_boost_round,
        "holdout_fraction": spec.holdout_fraction,
        "alert_threshold": spec.alert_threshold,
        "training_watermark": watermark,
        "training_cutoff": commit.get(CUTOFF_KEY, ""),
        "holdout_from": cut.isoformat(),
        "features": ",".join(ff.names),
        "shuffled_labels": shuffle_labels,
    }
    for k, v in params.items():
        c.log_param(run_id, k, str(v)[:500])
    for k, v in metrics.items():
        c.log_metric(run_id, k, v)
    for k, v in baseline.items():
        c.log_metric(run_id, f"baseline_{k}", v)
    for k, v in (champion_metrics or {}).items():
        c.log_metric(run_id, f"champion_{k}", v)
    with tempfile.TemporaryDirectory() as tmp:
        booster_path = Path(tmp) / registry.BOOSTER_FILE
        booster.save_model(str(booster_path))
        plot_path = Path(tmp) / "evaluation.png"
        _plot(
            plot_path,
            y,
            scores,
            booster,
            ff.names,
            f"{settings.pipeline.name}: holdout ROC-AUC {metrics['roc_auc']:.3f}, PR-AUC {metrics['pr_auc']:.3f}",
        )
        c.log_artifact(run_id, str(plot_path), "plots")
        version = registry.register(
            settings,
            run_id,
            booster_path,
            ff.names,
            watermark,
            metrics,
            extra_tags={"training_key": training_key} if not shuffle_labels else None,
        )
        store = storage.files(settings.profile)
        store.write_bytes(f"plots/evaluation-v{version}.png", plot_path.read_bytes())
        kept = _plot_location(settings, version)
    if promoted:
        registry.promote(settings, version)
    c.set_tag(run_id, "promotion", reason)
    c.set_terminated(run_id)
    return TrainReport(
        run_id,
        version,
        promoted,
        reason,
        metrics,
        champion_metrics,
        baseline,
        train_rows,
        len(y),
        float(y.mean()),
        watermark,
        str(kept),
        round(time.monotonic() - started, 2),
    )


def _already_trained(settings: Settings, version: Any, started: float) -> TrainReport:
    tags = version.tags
    metrics = {k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")}
    champion = registry.champion_version(settings)
    return TrainReport(
        version.run_id,
        int(version.version),
        champion == int(version.version),
        f"training set already trained as v{version.version}: nothing to do",
        metrics,
        None,
        {},
        0,
        0,
        float("nan"),
        int(tags.get("watermark", -1)),
        str(_plot_location(settings, int(version.version))),
        round(time.monotonic() - started, 2),
        skipped=True,
    )


def _plot_location(settings: Settings, version: int) -> str:
    """Where a model's evaluation plot is kept: a local path, or an hdfs:// URI."""
    uri = storage.files(settings.profile).uri(f"plots/evaluation-v{version}.png")
    return uri.removeprefix("file://")
