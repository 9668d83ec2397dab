"""Benchmark: the speed layer beside a bare kafka-python consumer and Quix Streams, on the same topic, in one run.

    python bench/speed.py [--events 200000] [--rate 5000] [--seconds 30] [--no-quix]

On the embedded broker (``services up``), one topic of ``--events`` records is read by:

1. a bare kafka-python consumer that only iterates the records (the baseline);
2. Quix Streams 3.28 (in a virtualenv of its own under ``~/.cache/lambdaflow``): one 1-hour tumbling
   window of four aggregates per key, at-least-once, no validation, no master table, no model;
3. one speed-layer instance end to end, with a champion loaded and scoring every event;
4. two instances (``--instance 0`` and ``1``, processes of one consumer group).

Then one instance runs while a producer (a process of its own, paced every 10 ms) sends ``--rate``
events/s for ``--seconds`` after 8 s of warm-up (the group join, not counted): the end-to-end latency of
each record, from its Kafka timestamp (the send) to its micro-batch being committed in every speed table,
which is when a unified-view query or ``predictions`` first sees it. Per-stage times come
from the micro-batches themselves. Results go to ``bench/results/speed.json`` and ``speed.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lambdaflow import producer, registry, services
from lambdaflow.config import EmbeddedKafka, ExternalKafka, LocalStorage, Settings, load_settings
from lambdaflow.contracts.commits import RECORDS_KEY, SEQ_KEY
from lambdaflow.contracts.speed import SpeedTables
from lambdaflow.features import FeatureFunction
from lambdaflow.sample_data import generate
from speed_layer.runner import SpeedLayer, configure_logging

RESULTS = ROOT / "bench" / "results"
QUIX_VERSION = "3.28.*"
#: Quix Streams lives in a virtualenv of its own (it pins confluent-kafka and rocksdict); LAMBDAFLOW_QUIX_VENV overrides.
QUIX_VENV = Path(os.environ.get("LAMBDAFLOW_QUIX_VENV", Path.home() / ".cache" / "lambdaflow" / "quix-venv"))
QUIX_SCRIPT = """
import sys, time
from quixstreams import Application
from quixstreams.dataframe.windows import Count, Max, Mean, Sum
bootstrap, topic, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
# no changelog topics: Tansu reports no retention.ms, which Quix reads to create them (state stays in RocksDB)
app = Application(broker_address=bootstrap, consumer_group=f"quix-{time.time_ns()}", auto_offset_reset="earliest",
                  processing_guarantee="at-least-once", state_dir=sys.argv[4], use_changelog_topics=False)
seen = {"n": 0, "t0": None}
def count(value):
    seen["n"] += 1
    if seen["t0"] is None:
        seen["t0"] = time.perf_counter()
    if seen["n"] >= expected:
        seen["t1"] = time.perf_counter()
        app.stop()
    return value
sdf = app.dataframe(app.topic(topic, value_deserializer="json"))
sdf = sdf.update(count)
sdf = sdf.tumbling_window(3_600_000).agg(n=Count(), total=Sum("amount"), top=Max("amount"), mean=Mean("amount")).current()
app.run()
print((seen["n"] - 1) / (seen["t1"] - seen["t0"]))
"""


def quix_python() -> Path | None:
    """Quix Streams' interpreter, installing it into its own virtualenv on first use (None if that fails)."""
    python = QUIX_VENV / "bin" / "python"
    if not python.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", f"quixstreams=={QUIX_VERSION}"], check=True, timeout=900)
        except (subprocess.SubprocessError, OSError) as exc:
            print(f"Quix Streams could not be installed ({exc}); its column stays empty", file=sys.stderr)
            return None
    return python


def fresh_settings(base: Settings, tag: str, **speed: Any) -> Settings:
    """The pipeline on its own storage root and consumer group (a run starts from nothing)."""
    root = tempfile.mkdtemp(prefix=f"bench-speed-{tag}-")
    conf = base.profile.speed.model_copy(update={"consumer_group": f"bench-{tag}-{time.time_ns()}", "metrics_port": 0, **speed})
    profile = base.profile.model_copy(update={"storage": LocalStorage(kind="local", root=root), "speed": conf})
    return base.model_copy(update={"profile": profile})


def promote_champion(settings: Settings) -> int:
    """A small XGBoost model over the pipeline's features, registered and promoted: every event gets scored."""
    import xgboost as xgb

    names = FeatureFunction(settings.pipeline).names
    rng = np.random.default_rng(1)
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(rng.normal(size=(2000, len(names))), rng.integers(0, 2, 2000)), 50)
    path = Path(tempfile.mkdtemp()) / registry.BOOSTER_FILE
    booster.save_model(str(path))
    client = registry.client(settings)
    version = registry.register(settings, client.create_run(registry.experiment_id(settings)).info.run_id, path, names, 0, {})
    registry.promote(settings, version)
    return version


def steady_rate(settings: Settings) -> tuple[float, int]:
    """Records/s between the first and the last speed commit of ``master/events`` (the group join excluded)."""
    commits = [c for c in SpeedTables(settings).master.history() if SEQ_KEY in c]
    commits.sort(key=lambda c: c["timestamp"])
    records = sum(int(c[RECORDS_KEY]) for c in commits[1:])
    seconds = (commits[-1]["timestamp"] - commits[0]["timestamp"]) / 1000
    return records / seconds, len(commits)


def one_instance(settings: Settings) -> dict[str, Any]:
    layer = SpeedLayer(settings, metrics_port=0)
    batches: list[Any] = []
    layer.run(idle_exit_seconds=2, on_batch=batches.append)
    rate, n = steady_rate(settings)
    stages: dict[str, float] = {}
    for b in batches:
        for stage, seconds in b.stages.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    records = sum(b.records for b in batches)
    return {
        "records_per_s": round(rate),
        "batches": n,
        "scored": sum(b.scored for b in batches),
        "mean_batch_records": round(records / max(1, len(batches))),
        "stage_us_per_record": {k: round(v / records * 1e6, 1) for k, v in stages.items()},
    }


def two_instances(settings: Settings, bootstrap: list[str], events: int, tmp: Path) -> dict[str, Any]:
    profile = tmp / "two-profile.yaml"
    data = json.loads(settings.profile.model_dump_json())
    data["kafka"] = {"kind": "external", "bootstrap_servers": bootstrap}  # the processes find the broker by address
    profile.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "speed_layer", "--profile", str(profile), "--pipeline", str(settings.pipeline_path)]
    logs = [open(tmp / f"instance-{k}.log", "w") for k in range(2)]  # closed below
    procs = [subprocess.Popen([*cmd, "--instance", str(k)], env=env, stderr=logs[k]) for k in range(2)]
    master = SpeedTables(settings).master
    deadline = time.monotonic() + 900
    try:
        while not master.exists() or master.snapshot().num_records < events:
            dead = [p.returncode for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"two instances stopped ({dead}); see {tmp}/instance-*.log")
            time.sleep(1)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=120)
        for f in logs:
            f.close()
    rate, n = steady_rate(settings)
    return {"records_per_s": round(rate), "batches": n}


#: Seconds of the freshness run not counted: the layer joins its consumer group meanwhile.
WARM_UP_SECONDS = 8


def produce_steadily(bootstrap: list[str], pipeline: Any, rate: int, seconds: int) -> None:
    """(A process of its own) ``rate`` events/s for ``seconds``, paced every 10 ms, each stamped by Kafka at its send.

    Not ``producer.produce``: its rate limit holds per chunk of 5,000 rows, one burst a second at this rate.
    """
    from kafka import KafkaProducer

    events = generate(rate * seconds, days=1, seed=77).events
    key, topic, step = pipeline.events.partition_key, pipeline.source.topic, max(1, rate // 100)
    kafka = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    started = time.monotonic()
    for i, row in enumerate(events.to_pylist()):
        if i % step == 0 and (ahead := i / rate - (time.monotonic() - started)) > 0:
            time.sleep(ahead)
        kafka.send(topic, key=str(row[key]).encode(), value=producer.encode_row(row))
    kafka.flush()
    kafka.close()


def freshness(settings: Settings, bootstrap: list[str], rate: int, seconds: int) -> dict[str, Any]:
    layer = SpeedLayer(settings, metrics_port=0)
    latencies: list[Any] = []  # (seconds, sent at in ms), then the seconds counted
    observe = layer.metrics.observe

    def keep(result: Any, lag: int, records: Any = ()) -> None:
        now_ms = time.time() * 1000
        latencies.extend(((now_ms - r.timestamp_ms) / 1000, r.timestamp_ms) for r in records if r.timestamp_ms)
        observe(result, lag, records)

    layer.metrics.observe = keep  # type: ignore[method-assign]
    # a process of its own, as a real producer is: a thread here took the interpreter lock from the layer.
    # Started first (the layer could otherwise idle-exit before it); the group join's seconds are not counted.
    target = importlib.import_module("bench.speed").produce_steadily  # by module name: a spawned child imports it
    sender = multiprocessing.get_context("spawn").Process(
        target=target, args=(bootstrap, settings.pipeline, rate, seconds + WARM_UP_SECONDS)
    )
    sender.start()
    counted_from_ms = (time.time() + WARM_UP_SECONDS) * 1000
    layer.run(idle_exit_seconds=4)
    sender.join()
    if sender.exitcode != 0:
        raise RuntimeError(f"the freshness producer exited with {sender.exitcode}")
    latencies = [lat for lat, sent_ms in latencies if sent_ms >= counted_from_ms]
    lat = np.array(latencies)
    return {
        "rate_events_per_s": rate,
        "events": int(lat.size),
        "p50_s": round(float(np.percentile(lat, 50)), 3),
        "p99_s": round(float(np.percentile(lat, 99)), 3),
        "max_s": round(float(lat.max()), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--no-quix", action="store_true")
    parser.add_argument(
        "--broker", choices=["apache", "tansu"], default="apache", help="the embedded broker (Quix needs Apache Kafka's topic configs)"
    )
    args = parser.parse_args()
    configure_logging(logging.WARNING)
    base = load_settings()
    base = base.model_copy(
        update={"profile": base.profile.model_copy(update={"kafka": EmbeddedKafka(kind="embedded", broker=args.broker)})}
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-speed-"))
    result: dict[str, Any] = {"events": args.events}
    one = fresh_settings(base, "one")
    services.up(one.profile)
    try:
        bootstrap = services.bootstrap_servers(one.profile)
        p = base.pipeline
        topic = f"{p.source.topic}-bench-{time.time_ns()}"
        pipeline = base.pipeline.model_copy(update={"source": p.source.model_copy(update={"topic": topic})})
        services.ensure_topic(bootstrap, topic, p.source.partitions)
        events = generate(args.events, days=10, seed=3).events
        producer.produce(bootstrap, producer.pipeline_streams(pipeline, events, topic=topic))
        print(f"{args.events:,} records on {topic} ({p.source.partitions} partitions)", file=sys.stderr)

        t0 = time.perf_counter()
        consumed = sum(1 for _ in services.iter_topic(bootstrap, topic, idle_polls=1, poll_ms=200))
        result["bare_kafka_python_records_per_s"] = round(consumed / (time.perf_counter() - t0))
        print(f"bare consumer: {result['bare_kafka_python_records_per_s']:,}/s", file=sys.stderr)

        python = None if args.no_quix else quix_python()
        if python is not None:
            script = tmp / "quix_peer.py"
            script.write_text(QUIX_SCRIPT)
            out = subprocess.run(
                [str(python), str(script), bootstrap[0], topic, str(args.events), str(tmp / "quix-state")],
                capture_output=True,
                text=True,
                timeout=900,
            )
            result["quix_streams_records_per_s"] = round(float(out.stdout.strip().splitlines()[-1])) if out.returncode == 0 else None
            print(f"quix streams: {result['quix_streams_records_per_s']}/s {out.stderr[-300:] if out.returncode else ''}", file=sys.stderr)

        one = one.model_copy(update={"pipeline": pipeline})
        result["model_version"] = promote_champion(one)
        result["one_instance"] = one_instance(one)
        print(f"one instance: {result['one_instance']}", file=sys.stderr)

        live_topic = f"{topic}-live"
        services.ensure_topic(bootstrap, live_topic, p.source.partitions)
        live = fresh_settings(base, "live").model_copy(
            update={"pipeline": pipeline.model_copy(update={"source": p.source.model_copy(update={"topic": live_topic})})}
        )
        # the embedded broker is found by the storage root it was started with: reach it by address instead
        live = live.model_copy(
            update={"profile": live.profile.model_copy(update={"kafka": ExternalKafka(kind="external", bootstrap_servers=bootstrap)})}
        )
        promote_champion(live)
        result["freshness"] = freshness(live, bootstrap, args.rate, args.seconds)
        print(f"freshness: {result['freshness']}", file=sys.stderr)
        two = fresh_settings(base, "two").model_copy(update={"pipeline": pipeline})
        pipeline_file = tmp / "pipeline.yaml"
        # sort_keys=False: the fields' order is the tables' column order (sorted, the instances refused master/events)
        pipeline_file.write_text(yaml.safe_dump(json.loads(pipeline.model_dump_json(exclude_none=True)), sort_keys=False))
        two = two.model_copy(update={"pipeline_path": pipeline_file})
        two = two.model_copy(
            update={"profile": two.profile.model_copy(update={"speed": two.profile.speed.model_copy(update={"instances": 2})})}
        )
        promote_champion(two)
        try:
            result["two_instances"] = two_instances(two, bootstrap, args.events, tmp)
        except RuntimeError as exc:  # reported, not fatal: the other figures of the run stand
            result["two_instances"] = {"records_per_s": 0, "batches": 0, "error": str(exc)}
        print(f"two instances: {result['two_instances']}", file=sys.stderr)

    finally:
        services.down(one.profile)
    bare = result["bare_kafka_python_records_per_s"]
    result["one_instance_to_bare"] = round(result["one_instance"]["records_per_s"] / bare, 2)
    result["two_instances_to_one"] = round(result["two_instances"]["records_per_s"] / result["one_instance"]["records_per_s"], 2)
    result["broker"] = args.broker
    if result.get("quix_streams_records_per_s"):
        result["one_instance_to_quix"] = round(result["one_instance"]["records_per_s"] / result["quix_streams_records_per_s"], 2)
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speed.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "speed.md").write_text(render(result))
    return 0


def render(r: dict[str, Any]) -> str:
    one, two, fresh = r["one_instance"], r["two_instances"], r["freshness"]
    stages = " · ".join(f"{k} {v}" for k, v in one["stage_us_per_record"].items())
    return (
        f"# Speed layer beside a bare consumer and Quix Streams (same topic, one run, {r['events']:,} records, "
        f"embedded {r.get('broker', 'tansu')} broker, 2 cores)\n\n"
        "| reader | records/s | ratio |\n|---|---|---|\n"
        f"| bare kafka-python consumer | {r['bare_kafka_python_records_per_s']:,} | 1.00 |\n"
        f"| Quix Streams 3.28 (1-h window, 4 aggregates, at-least-once) | {r.get('quix_streams_records_per_s') or 'n/a'} | "
        f"{round((r.get('quix_streams_records_per_s') or 0) / r['bare_kafka_python_records_per_s'], 2)} |\n"
        f"| speed layer, 1 instance, champion v{r['model_version']} scoring every event | {one['records_per_s']:,} | {r['one_instance_to_bare']} |\n"
        f"| speed layer, 2 instances | {two['records_per_s']:,} | {round(two['records_per_s'] / r['bare_kafka_python_records_per_s'], 2)} |\n\n"
        + (f"Two instances failed: {two['error']}\n\n" if two.get("error") else "")
        + f"Two instances / one: **{r['two_instances_to_one']}×**. One instance: {one['batches']} micro-batches, "
        f"{one['mean_batch_records']:,} records each on average, {one['scored']:,} scored.\n\n"
        f"Per-stage time (µs per record): {stages}\n\n"
        f"End to end at a steady {fresh['rate_events_per_s']:,} events/s (send → committed in every speed table; producer process paced every 10 ms, "
        f"{fresh['events']:,} events): **p50 {fresh['p50_s']} s, p99 {fresh['p99_s']} s**, max {fresh['max_s']} s.\n"
    )


if __name__ == "__main__":
    sys.exit(main())
