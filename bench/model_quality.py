"""Model quality on the sample data: ≥ 1M events over ≥ 30 days through training set → train → registry.

    python bench/model_quality.py [--events 1000000] [--days 30]

The master table is written straight from the generator (as the speed layer
would, one micro-batch per million events), then the batch layer builds the
training set and trains. Holdout metrics sit beside the trivial base-rate
baseline measured on the same holdout; results go to
``bench/results/model_quality.json`` and the evaluation plot next to it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batch_layer.train import train
from batch_layer.training import build_training_set
from lambdaflow.config import LocalStorage, load_settings
from lambdaflow.contracts.master import events_table, labels_table, to_label_rows, to_master_rows
from lambdaflow.sample_data import generate
from lambdaflow.spark import get_spark

RESULTS = ROOT / "bench" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="model-quality-"))
    base = load_settings()
    settings = base.model_copy(update={"profile": base.profile.model_copy(update={"storage": LocalStorage(kind="local", root=str(work))})})
    timings = {}
    t0 = time.perf_counter()
    sample = generate(args.events, args.days, seed=1)
    for i, start in enumerate(range(0, args.events, 1_000_000)):
        events_table(settings).append(to_master_rows(sample.events.slice(start, 1_000_000), settings.pipeline.events, i + 1))
    labels_table(settings).append(to_label_rows(sample.labels, settings.pipeline.labels, 1))
    timings["generate_and_write_s"] = round(time.perf_counter() - t0, 1)
    print(f"{args.events:,} events, fraud rate {sample.fraud_rate:.2%}, {sample.labels.num_rows:,} chargebacks", flush=True)
    spark = get_spark(settings.profile.spark, app_name="bench-model-quality")
    t0 = time.perf_counter()
    ts = build_training_set(settings, spark)
    timings["training_set_s"] = round(time.perf_counter() - t0, 1)
    print(f"training set: {ts.rows:,} rows, {ts.positives:,} positive", flush=True)
    t0 = time.perf_counter()
    report = train(settings, spark)
    timings["train_s"] = round(time.perf_counter() - t0, 1)
    spark.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot = RESULTS / "model_quality.png"
    shutil.copy(report.plot, plot)
    result = {
        "events": args.events,
        "days": args.days,
        "fraud_rate_events": sample.fraud_rate,
        "training_rows": ts.rows,
        "holdout_rows": report.holdout_rows,
        "holdout_fraud_rate": report.positive_rate,
        "metrics": report.metrics,
        "baseline_metrics": report.baseline_metrics,
        "promoted": report.promoted,
        "reason": report.reason,
        "timings": timings,
        "mlflow_run": report.run_id,
    }
    (RESULTS / "model_quality.json").write_text(json.dumps(result, indent=2))
    print(f"{'metric':<28}{'model':>10}{'baseline':>10}")
    for name, value in report.metrics.items():
        print(f"{name:<28}{value:>10.4f}{report.baseline_metrics[name]:>10.4f}")
    print(report.reason)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
