"""Benchmark: speed-layer throughput beside a bare kafka-python consumer reading the same topic.

    python bench/speed.py [--events 200000] [--batch 20000]

Both read the same records from the embedded broker in the same run: the
baseline only iterates them; the speed layer validates, appends to Delta
(exactly once), computes features, scores (when a champion exists) and writes
the real-time views. Results go to ``bench/results/speed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lambdaflow import producer, services
from lambdaflow.config import LocalStorage, load_settings
from lambdaflow.sample_data import generate
from speed_layer.runner import SpeedLayer, configure_logging

RESULTS = ROOT / "bench" / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()
    configure_logging(logging.WARNING)
    base = load_settings()
    root = tempfile.mkdtemp(prefix="bench-speed-")
    speed = base.profile.speed.model_copy(update={"max_batch_records": args.batch, "metrics_port": 0})
    profile = base.profile.model_copy(update={"storage": LocalStorage(kind="local", root=root), "speed": speed})
    settings = base.model_copy(update={"profile": profile})
    services.up(profile)
    try:
        bootstrap = services.bootstrap_servers(profile)
        p = settings.pipeline
        services.ensure_topic(bootstrap, p.source.topic, p.source.partitions)
        events = generate(args.events, days=10, seed=3).events
        producer.produce(bootstrap, producer.pipeline_streams(p, events))

        t0 = time.perf_counter()
        consumed = sum(1 for _ in services.iter_topic(bootstrap, p.source.topic, idle_polls=1, poll_ms=200))
        bare = time.perf_counter() - t0

        layer = SpeedLayer(settings, metrics_port=0)
        batches, done_at = [], []

        def record(batch) -> None:
            batches.append(batch)
            done_at.append(time.perf_counter())

        layer.run(idle_exit_seconds=1.5, on_batch=record)
        processing = sum(b.seconds for b in batches)
        appended = sum(b.appended for b in batches)
        # end to end (poll + validate + commits + features + score + views), after the first batch (group join excluded)
        steady = sum(b.records for b in batches[1:]) / (done_at[-1] - done_at[0])
        result = {
            "events": args.events,
            "batch_records": args.batch,
            "bare_consumer_records_per_s": round(consumed / bare),
            "speed_layer_end_to_end_records_per_s": round(steady),
            "speed_layer_processing_only_records_per_s": round(appended / processing),
            "ratio_end_to_end_to_bare": round(steady / (consumed / bare), 2),
            "batches": len(batches),
            "mean_batch_seconds": round(processing / len(batches), 3),
        }
    finally:
        services.down(profile)
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speed.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "speed.md").write_text(
        "# Speed-layer throughput (same topic, same run)\n\n| records | bare kafka-python consumer (rec/s) | speed layer end to end (rec/s) | of which processing only (rec/s) | end to end / bare |\n|---|---|---|---|---|\n"
        f"| {args.events:,} | {result['bare_consumer_records_per_s']:,} | {result['speed_layer_end_to_end_records_per_s']:,} | {result['speed_layer_processing_only_records_per_s']:,} | {result['ratio_end_to_end_to_bare']} |\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
