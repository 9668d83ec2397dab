"""Chaos run: routine faults injected into one pipeline, then every exactness promise checked.

One run, on the embedded broker with durable (S3 on moto) storage:

* N events (default 200,000) with their chargebacks; 2% of them delivered again at later offsets
  (recent events, as a retrying producer repeats them: within two chunks of the first copy);
  1% poison records of every kind the validator must survive;
* SIGKILLs of the speed layer at random moments (default 20);
* kill -9 of the broker and a restart on the same storage (default 2);
* complete batch cycles (`lambdaflow batch run`: views, training set, train, publish, expire, maintain; default 3);
* one forced retention gap (DeleteRecords on unread records), which must stop the speed layer with
  exit code 3 until it is acknowledged (`lambdaflow speed acknowledge-gap`).

At the end: `verify` reports 0 differences; `master/events` holds every produced id (but those the gap
lost) exactly once; `predictions` one row per event id; every poison record sits in `quarantine` with
its reason; speed-layer features equal training-set features on a sample. A table of faults injected
and survived is printed and written to bench/results/chaos.{md,json}.

    python bench/chaos.py [--events 200000 --kills 20 --broker-restarts 2 --cycles 3]

The embedded Tansu broker is known to lose acknowledged records of an idempotent producer when it
crashes (docs/architecture.md §8); the producer here is not idempotent on Tansu, and any loss seen is
reported, not hidden.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kafka import KafkaAdminClient, KafkaProducer, TopicPartition

from lambdaflow import producer, services
from lambdaflow.config import load_settings
from lambdaflow.contracts.paths import TRAINING_SET, table_uri
from lambdaflow.contracts.speed import SpeedTables
from lambdaflow.features import FeatureFunction
from lambdaflow.sample_data import generate
from lambdaflow.tables import Table
from serving_layer.verify import verify
from speed_layer.continuity import find_gaps
from speed_layer.microbatch import SpeedPipeline

POISON: dict[str, bytes] = {
    "not-utf8": b"\xff\xfe\xfd",
    "broken-json": b'{"event_id": "x", "amount": ',
    "not-an-object": b"[1, 2, 3]",
    "lone-surrogate": b'{"event_id": "p-\\ud800", "account_id": "a"}',
    "deep-nesting": b"[" * 3000 + b"]" * 3000,
    "huge-integer": b'{"event_id": "p-h", "mcc": ' + b"9" * 5000 + b"}",
    "nan": b'{"event_id": "p-n", "amount": NaN}',
    "duplicate-keys": b'{"event_id": "p-d", "event_id": "p-e"}',
    "year-1": b'{"event_id": "p-y", "event_time": "0001-01-01T00:00:00+05:00"}',
    "year-9999": b'{"event_id": "p-z", "event_time": "9999-12-31T23:59:59-05:00"}',
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = Path(tempfile.mkdtemp(prefix="lambdaflow-chaos-"))
        tag = uuid.uuid4().hex[:6]
        pipeline = yaml.safe_load((ROOT / "conf/pipeline.yaml").read_text())
        pipeline["source"]["topic"], pipeline["labels"]["topic"] = f"chaos-tx-{tag}", f"chaos-cb-{tag}"
        profile = yaml.safe_load((ROOT / "conf/profiles/local.yaml").read_text())
        profile["storage"]["root"] = str(self.work / "root")
        profile["kafka"] = {"kind": "embedded", "storage": "s3"}  # durable: survives a broker kill -9
        profile["spark"]["conf"]["spark.driver.memory"] = "3g"
        profile["speed"] = {"consumer_group": f"chaos-{tag}", "max_batch_records": 5000, "max_batch_seconds": 0.5, "metrics_port": 0}
        self.pipeline_path, self.profile_path = self.work / "pipeline.yaml", self.work / "profile.yaml"
        self.pipeline_path.write_text(yaml.safe_dump(pipeline))
        self.profile_path.write_text(yaml.safe_dump(profile))
        self.settings = load_settings(str(self.profile_path), self.pipeline_path)
        self.cli = ["--profile", str(self.profile_path), "--pipeline", str(self.pipeline_path)]
        self.faults: Counter[str] = Counter()
        self.survived: Counter[str] = Counter()
        self.produced: list[str] = []
        self.lost: set[str] = set()
        self.poison_sent: Counter[str] = Counter()

    # ------------------------------------------------------------------ actions

    @property
    def bootstrap(self) -> list[str]:
        return services.bootstrap_servers(self.settings.profile)

    def produce(self, events: pa.Table, labels: pa.Table | None, redeliver: float, poison: float) -> None:
        streams = producer.pipeline_streams(self.settings.pipeline, events, labels)
        for s in streams:
            services.ensure_topic(self.bootstrap, s.topic, self.settings.pipeline.source.partitions)
        report = producer.produce(self.bootstrap, streams, producer_config=services.producer_settings(self.settings.profile))
        assert report.failed == 0, report.errors
        self.produced += events.column("event_id").to_pylist()
        n_repeat = int(events.num_rows * redeliver)
        if n_repeat:  # a producer retrying: recent events delivered again, at later offsets
            recent = self.produced[-2 * events.num_rows :]
            earlier = pa.array(self.rng.sample(recent, min(n_repeat, len(recent))))
            table = self.all_events.filter(pc.is_in(self.all_events["event_id"], value_set=earlier))
            streams = producer.pipeline_streams(self.settings.pipeline, table)
            producer.produce(self.bootstrap, streams, producer_config=services.producer_settings(self.settings.profile))
            self.faults["repeated deliveries"] += table.num_rows
        n_poison = int(events.num_rows * poison)
        if n_poison:
            kafka = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            kinds = list(POISON)
            for i in range(n_poison):
                kind = kinds[i % len(kinds)]
                kafka.send(self.settings.pipeline.source.topic, key=f"poison-{kind}".encode(), value=POISON[kind])
                self.poison_sent[kind] += 1
            kafka.flush()
            kafka.close()
            self.faults["poison records"] += n_poison

    def speed(self, *extra: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.Popen(
            [sys.executable, "-m", "speed_layer", *self.cli, *extra],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def kill_speed(self) -> None:
        proc = self.speed()
        time.sleep(self.rng.uniform(2.0, 8.0))  # start-up (imports, group join) takes a few seconds
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        self.faults["speed layer SIGKILL"] += 1

    def drain(self) -> None:
        proc = self.speed("--idle-exit", "4")
        _, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"the speed layer failed: {err[-2000:]}")

    def kill_broker(self) -> None:
        record = services.read_state(self.settings.profile)["broker"]
        os.kill(record.pid, signal.SIGKILL)
        while services.is_running(record):
            time.sleep(0.1)
        services.restart_broker(self.settings.profile)
        self.faults["broker kill -9 + restart"] += 1
        self.survived["broker kill -9 + restart"] += 1  # counted as survived once the final checks pass

    def batch_cycle(self) -> None:
        t0 = time.monotonic()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        result = subprocess.run(
            [sys.executable, "-m", "lambdaflow_app", *self.cli, "batch", "run"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(f"batch run failed ({result.returncode}): {result.stderr[-2000:]}")
        self.faults["batch cycles (incl. maintain)"] += 1
        log(f"batch cycle {self.faults['batch cycles (incl. maintain)']} done in {time.monotonic() - t0:.0f}s")

    def retention_gap(self, events: pa.Table) -> None:
        """Produce events nobody reads, delete them as retention would, and expect a stop with exit code 3."""
        self.produce(events, None, 0, 0)
        lost = set(events.column("event_id").to_pylist())
        topic = self.settings.pipeline.source.topic
        counts = services.count_records(self.bootstrap, topic)
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.delete_records({TopicPartition(topic, p): n for p, n in counts.items()})
            self.gap_kind = "retention gap (DeleteRecords)"
        except Exception:  # noqa: BLE001 - Tansu has no DeleteRecords: the log starts over instead (a reset)
            admin.delete_topics([topic])
            while topic in services.list_topics(self.bootstrap):
                time.sleep(0.5)
            services.ensure_topic(self.bootstrap, topic, self.settings.pipeline.source.partitions)
            self.gap_kind = "log gap (topic recreated: this broker has no DeleteRecords)"
        finally:
            admin.close()
        self.faults[self.gap_kind] += 1
        proc = self.speed("--idle-exit", "3")
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 3 or "does not continue" not in err:
            raise RuntimeError(f"the gap was not reported (exit {proc.returncode}): {err[-1500:]}")
        pipeline = SpeedPipeline(self.settings)
        gaps = find_gaps({"bootstrap_servers": self.bootstrap}, *pipeline.committed_position())
        for gap in gaps:
            args = ["speed", "acknowledge-gap", "--topic", gap.topic, "--partition", str(gap.partition), "--reason", "chaos: retention"]
            subprocess.run([sys.executable, "-m", "lambdaflow_app", *self.cli, *args], cwd=ROOT, check=True, capture_output=True)
        self.lost |= lost
        self.survived[self.gap_kind] += 1
        log(f"retention gap: stopped with exit code 3, {len(gaps)} partition(s) acknowledged, {len(lost)} events lost by design")

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, object]:
        a = self.args
        started = time.monotonic()
        services.up(self.settings.profile)
        sample = generate(a.events, days=20, seed=a.seed)
        self.all_events = sample.events
        chunks = max(a.kills, 1)
        bounds = np.linspace(0, sample.events.num_rows, chunks + 1).astype(int)
        restarts = {int(chunks * (i + 1) / (a.broker_restarts + 1)) for i in range(a.broker_restarts)}
        cycles = {int(chunks * (i + 1) / a.cycles) - 1 for i in range(a.cycles)}
        gap_at = chunks // 2
        gap_events = generate(500, days=1, seed=a.seed + 1).events
        label_ids = sample.labels.column("event_id")
        for i in range(chunks):
            events = sample.events.slice(bounds[i], bounds[i + 1] - bounds[i])
            labels = sample.labels.filter(pc.is_in(label_ids, value_set=events.column("event_id")))
            self.produce(events, labels, a.redeliver, a.poison)
            self.kill_speed()
            if i in restarts:
                self.kill_broker()
            if i == gap_at:
                self.drain()
                self.retention_gap(gap_events)
            if i in cycles:
                self.drain()
                self.batch_cycle()
            log(f"chunk {i + 1}/{chunks}: {bounds[i + 1]:,} events produced, faults so far {dict(self.faults)}")
        self.drain()
        return self.check(time.monotonic() - started)

    # ------------------------------------------------------------------ the checks

    def check(self, seconds: float) -> dict[str, object]:
        tables = SpeedTables(self.settings)
        master = tables.master.snapshot().to_arrow(columns=["event_id"])
        ids = Counter(master.column("event_id").to_pylist())
        expected = set(self.produced) - self.lost
        missing, extra = expected - set(ids), set(ids) - expected - self.lost
        repeated = [i for i, n in ids.items() if n > 1]
        predictions = tables.predictions.snapshot().to_arrow(columns=["event_id", "features"])
        per_event = Counter(predictions.column("event_id").to_pylist())
        quarantine = tables.quarantine.snapshot().to_arrow(columns=["key", "reason"])
        keys = [k.decode() if k else "" for k in quarantine.column("key").to_pylist()]
        reasons = quarantine.column("reason").to_pylist()
        poison_found = Counter(k.removeprefix("poison-") for k, r in zip(keys, reasons, strict=True) if k.startswith("poison-") and r)
        checks = verify(self.settings)
        parity = self.feature_parity(predictions)
        results = {
            "verify: 0 differences": all(c.ok for c in checks),
            "master/events: every produced id exactly once": not missing and not extra and not repeated,
            "predictions: one row per event id": max(per_event.values(), default=1) == 1 and set(per_event) == set(ids),
            "quarantine: every poison record with its reason": poison_found == self.poison_sent,
            "features: speed layer == training set (sample)": parity[0] > 0 and parity[1] == 0,
        }
        for name in ("speed layer SIGKILL", "repeated deliveries", "poison records", "batch cycles (incl. maintain)"):
            self.survived[name] = self.faults[name] if all(results.values()) else 0
        if not all(results.values()):
            self.survived["broker kill -9 + restart"] = 0
        return {
            "events": self.args.events,
            "seconds": round(seconds, 1),
            "faults": dict(self.faults),
            "survived": dict(self.survived),
            "checks": results,
            "details": {
                "missing_ids": len(missing),
                "unexpected_ids": len(extra),
                "ids_more_than_once": len(repeated),
                "lost_by_acknowledged_gap": len(self.lost),
                "poison_sent": dict(self.poison_sent),
                "poison_quarantined": dict(poison_found),
                "feature_parity_rows_compared": parity[0],
                "feature_parity_mismatches": parity[1],
                "verify": [
                    {"view": c.view, "matching": c.matching, "differing": c.differing, "missing": c.missing, "extra": c.extra}
                    for c in checks
                ],
            },
        }

    def feature_parity(self, predictions: pa.Table) -> tuple[int, int]:
        """Speed-layer features (stored with each prediction) vs. the training set's, on a sample of events."""
        training = Table(table_uri(self.settings.profile, TRAINING_SET))
        if not training.exists():
            return 0, 0
        names = FeatureFunction(self.settings.pipeline).names
        batch = training.snapshot().to_arrow(columns=["event_id", *names])
        sample = batch.take(pa.array(sorted(self.rng.sample(range(batch.num_rows), min(5000, batch.num_rows)))))
        speed = dict(zip(predictions.column("event_id").to_pylist(), predictions.column("features").to_pylist(), strict=True))
        compared = mismatched = 0
        for row in sample.to_pylist():
            got = speed.get(row["event_id"])
            if got is None:
                continue
            compared += 1
            want = np.array([row[n] for n in names], dtype=np.float64)
            if not np.allclose(np.array(got, dtype=np.float64), want, equal_nan=True, rtol=1e-9):
                mismatched += 1
        return compared, mismatched


def render(report: dict[str, object]) -> str:
    faults, survived, checks = report["faults"], report["survived"], report["checks"]
    assert isinstance(faults, dict) and isinstance(survived, dict) and isinstance(checks, dict)
    lines = [
        f"# Chaos run: {report['events']:,} events, {report['seconds']}s",
        "",
        "| fault | injected | survived |",
        "| --- | ---: | ---: |",
        *[f"| {name} | {n:,} | {survived.get(name, 0):,} |" for name, n in faults.items()],
        "",
        "| check | result |",
        "| --- | --- |",
        *[f"| {name} | {'ok' if ok else 'FAILED'} |" for name, ok in checks.items()],
        "",
        "```json",
        json.dumps(report["details"], indent=2),
        "```",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--broker-restarts", type=int, default=2)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--redeliver", type=float, default=0.02)
    parser.add_argument("--poison", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/chaos")
    args = parser.parse_args()
    chaos = Chaos(args)
    try:
        report = chaos.run()
    finally:
        services.down(chaos.settings.profile)
    text = render(report)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(report["checks"].values()) else 1  # type: ignore[union-attr]


if __name__ == "__main__":
    sys.exit(main())
