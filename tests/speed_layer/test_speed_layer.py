"""The speed layer against the real broker and real Delta tables: exactly once through crashes, quarantine, parity."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
from kafka import KafkaProducer

from lambdaflow import producer, registry, services
from lambdaflow.contracts.commits import app_id, writer_ids
from lambdaflow.contracts.speed import SpeedTables
from lambdaflow.faults import CRASH_AT_ENV
from lambdaflow.features import FeatureFunction
from lambdaflow.sample_data import generate
from lambdaflow.schemas import INGEST_SEQ
from speed_layer.runner import SpeedLayer
from tests.conftest import ROOT, SpeedEnv

SPEED = [sys.executable, "-m", "speed_layer"]


def send(env: SpeedEnv, events: pa.Table, labels: pa.Table | None = None) -> None:
    p = env.settings.pipeline
    streams = producer.pipeline_streams(p, events, labels)
    for s in streams:
        services.ensure_topic(env.bootstrap, s.topic, p.source.partitions)
    producer.produce(env.bootstrap, streams)


class LayerProcess(subprocess.Popen[str]):
    """A speed-layer process whose log goes to a file.

    A pipe that nobody reads while the test polls the tables fills after some 64 KiB of log lines, and the
    layer then blocks on its next log line: a long run with many small micro-batches stalled that way.
    """

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.log = tempfile.TemporaryFile("w+", encoding="utf-8")
        super().__init__(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log, text=True)

    def communicate(self, input: str | None = None, timeout: float | None = None) -> tuple[None, str]:
        """Wait for the process; returns (None, its whole log)."""
        self.wait(timeout)
        self.log.seek(0)
        return None, self.log.read()


def start(env: SpeedEnv, *extra: str, crash_after: str | None = None) -> LayerProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    if crash_after:
        environment[CRASH_AT_ENV] = f"after:{crash_after}"
    return LayerProcess([*SPEED, *env.cli_args, *extra], environment)


def drain(env: SpeedEnv, idle: float = 4) -> str:
    """Run the layer until the topics are quiet; returns its log."""
    proc = start(env, "--idle-exit", str(idle))
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()  # a layer left running would take a core from every later test
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"the speed layer did not drain the topics in 300 s; its log ends: {err[-3000:]}") from None
    assert proc.returncode == 0, err[-3000:]
    return err


def check_exactly_once(env: SpeedEnv, produced_ids: list[str], bad_offsets: int = 0) -> None:
    tables = SpeedTables(env.settings)
    master = tables.master.snapshot().to_arrow()
    ids = master.column("event_id").to_pylist()
    counts = Counter(ids)
    assert not [i for i, c in counts.items() if c > 1], "an event was appended twice"
    assert set(ids) == set(produced_ids), "an event is missing from master/events"
    quarantine = tables.quarantine.snapshot().to_arrow()
    assert quarantine.num_rows == bad_offsets
    # every Kafka record is in master or quarantine: (partition, offset) pairs cover the topic exactly once
    coords = list(zip(master.column("_kafka_partition").to_pylist(), master.column("_kafka_offset").to_pylist()))
    topic = env.settings.pipeline.source.topic
    q = quarantine.filter(pc.equal(quarantine["topic"], topic))
    coords += list(zip(q.column("partition").to_pylist(), q.column("offset").to_pylist()))
    assert len(coords) == len(set(coords)) == len(produced_ids) + bad_offsets
    # every speed partial belongs to exactly one batch and equals the partials of that batch's master rows
    seqs = set(master.column(INGEST_SEQ).to_pylist())
    lasts = {w: tables.master.txn_version(w) for w in writer_ids(env.settings)}
    for name, view in tables.views.items():
        speed = tables.speed[name].snapshot().to_arrow()
        assert set(speed.column(INGEST_SEQ).to_pylist()) <= seqs | set(lasts.values())
        for seq in sorted(seqs)[:: max(1, len(seqs) // 8)]:
            mine = speed.filter(pc.equal(speed[INGEST_SEQ], seq)).drop_columns([INGEST_SEQ])
            rows = master.filter(pc.equal(master[INGEST_SEQ], seq))
            want = view.partials_arrow(rows)
            key = [(c, "ascending") for c in view.group_columns]
            assert mine.sort_by(key).equals(want.sort_by(key)), (name, seq)
        assert {w: tables.speed[name].txn_version(w) for w in lasts} == lasts  # no writer left a batch half done
    predictions = tables.predictions.snapshot().to_arrow()
    assert sorted(predictions.column("event_id").to_pylist()) == sorted(produced_ids)


def test_sigkill_at_random_points_loses_and_duplicates_nothing(speed_env: SpeedEnv) -> None:
    """200,000 events; the layer is SIGKILLed 20+ times (randomly, and right after each kind of commit)."""
    sample = generate(200_000, days=10, seed=99)
    send(speed_env, sample.events)
    rng = random.Random(7)
    kills = 0
    # deterministic crashes right after each table's commit of a batch: the "between commits" cases
    for seq, table in enumerate(["master/events", "quarantine", "master/labels", "speed/account_hourly", "predictions"], start=1):
        proc = start(speed_env, crash_after=f"{table}:{seq}")
        assert proc.wait(timeout=120) == 137, proc.stderr.read()[-2000:]
        kills += 1
    while kills < 22:  # random SIGKILLs: before, during and after commits
        proc = start(speed_env)
        time.sleep(rng.uniform(1.0, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
    drain(speed_env)
    check_exactly_once(speed_env, sample.events.column("event_id").to_pylist())
    master = SpeedTables(speed_env.settings).master.snapshot().to_arrow(columns=[INGEST_SEQ])
    assert len(set(master.column(INGEST_SEQ).to_pylist())) >= 40  # 200k records in batches of at most 5k


def test_five_percent_malformed_records_are_quarantined_with_reasons(speed_env: SpeedEnv) -> None:
    from tests.lambdaflow.test_validation import BAD

    events = generate(2000, days=2, seed=5).events
    topic = speed_env.settings.pipeline.source.topic
    services.ensure_topic(speed_env.bootstrap, topic, 4)
    kafka = KafkaProducer(bootstrap_servers=speed_env.bootstrap, acks="all", max_request_size=4 << 20)
    rng = random.Random(3)
    expected_bad: list[str] = []
    for row in events.to_pylist():
        kafka.send(topic, key=row["account_id"].encode(), value=producer.encode_row(row))
        if rng.random() < 0.05:
            payload, reason = BAD[len(expected_bad) % len(BAD)]
            kafka.send(topic, key=b"bad", value=payload)
            expected_bad.append(reason)
    kafka.flush()
    log = drain(speed_env)
    assert "Traceback" not in log
    check_exactly_once(speed_env, events.column("event_id").to_pylist(), bad_offsets=len(expected_bad))
    reasons = SpeedTables(speed_env.settings).quarantine.snapshot().to_arrow().column("reason").to_pylist()
    for fragment, n in Counter(expected_bad).items():
        assert sum(fragment in r for r in reasons) >= n, fragment
    assert len(expected_bad) > 80  # about 5% of 2,000


def test_speed_features_equal_batch_training_features(speed_env: SpeedEnv, spark) -> None:
    """Parity: what the speed layer scored with == what the batch layer rebuilds for training."""
    from batch_layer.training import featurize
    from batch_layer.views import recompute_views

    sample = generate(6000, days=4, seed=12)
    send(speed_env, sample.events.slice(0, 3000))
    drain(speed_env, idle=3)
    recompute_views(speed_env.settings, spark)  # the speed layer now continues from batch views as of W
    send(speed_env, sample.events.slice(3000))
    drain(speed_env, idle=3)
    tables = SpeedTables(speed_env.settings)
    predictions = tables.predictions.snapshot().to_arrow()
    batch = featurize(speed_env.settings, tables.master.snapshot().to_spark(spark)).toPandas().set_index("event_id")
    names = FeatureFunction(speed_env.settings.pipeline).names
    speed = {eid: f for eid, f in zip(predictions.column("event_id").to_pylist(), predictions.column("features").to_pylist())}
    assert len(speed) == 6000
    want = batch.loc[list(speed), names].to_numpy()
    got = np.array(list(speed.values()))
    assert np.allclose(got, want, equal_nan=True, rtol=1e-9)


def test_hot_reload_keeps_the_old_model_when_the_new_one_is_bad(speed_env: SpeedEnv, tmp_path) -> None:
    import xgboost as xgb

    settings = speed_env.settings
    layer = SpeedLayer(settings, metrics_port=0)
    scorer = layer.pipeline.scorer
    scorer.refresh(force=True)
    assert scorer.version is None  # no model yet: events are kept, predictions unscored
    features = FeatureFunction(settings.pipeline).names

    def register_model(corrupt: bool) -> int:
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(200, len(features))), rng.integers(0, 2, 200)
        booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, y), 3)
        path = tmp_path / registry.BOOSTER_FILE
        booster.save_model(str(path))
        c = registry.client(settings)
        run = c.create_run(registry.experiment_id(settings)).info.run_id
        version = registry.register(settings, run, path, features, 0, {})
        if corrupt:
            next((tmp_path / "root").rglob(f"*/{run}/artifacts/model/{registry.BOOSTER_FILE}")).write_bytes(b"garbage")
        registry.promote(settings, version)
        return version

    good = register_model(corrupt=False)
    scorer.refresh(force=True)
    assert scorer.version == good
    register_model(corrupt=True)
    scorer.refresh(force=True)
    assert scorer.version == good  # refused the bad champion, kept scoring with the old one
    table = FeatureFunction(settings.pipeline).compute(generate(10, days=1).events)
    assert scorer.score(table).shape == (10,)


def test_sigterm_finishes_the_batch_and_exits_cleanly(speed_env: SpeedEnv) -> None:
    send(speed_env, generate(3000, days=1, seed=1).events)
    proc = start(speed_env)
    deadline = time.time() + 60
    tables = SpeedTables(speed_env.settings)
    while time.time() < deadline and (tables.master.txn_version(app_id(speed_env.settings)) or 0) < 1:
        time.sleep(0.2)
    fetch = fetch_process(proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped after" in err
    assert not psutil.wait_procs([fetch], timeout=10)[1], "the fetch process outlived the layer"
    last = tables.master.txn_version(app_id(speed_env.settings))
    assert all(t.txn_version(app_id(speed_env.settings)) == last for t in tables.all().values())  # no half batch


def fetch_process(layer: subprocess.Popen[str]) -> psutil.Process:
    """The layer's fetch process (speed_layer/fetch_worker.py), once it runs."""
    deadline = time.time() + 60
    while time.time() < deadline:
        children = [c for c in psutil.Process(layer.pid).children() if "speed_layer.fetch_worker" in " ".join(c.cmdline())]
        if children:
            assert len(children) == 1, children
            return children[0]
        time.sleep(0.2)
    raise AssertionError("the speed layer started no fetch process in 60 s")


def test_a_killed_layer_takes_its_fetch_process_with_it(speed_env: SpeedEnv) -> None:
    """A fetch process left behind would keep the instance's static membership and its partitions."""
    proc = start(speed_env)
    fetch = fetch_process(proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not psutil.wait_procs([fetch], timeout=10)[1], "the fetch process outlived a SIGKILLed layer"


def test_metrics_endpoint_speaks_prometheus() -> None:
    import urllib.request

    from speed_layer.metrics import SpeedMetrics
    from speed_layer.microbatch import BatchResult

    port = services.free_port()
    metrics = SpeedMetrics(port)
    try:
        metrics.observe(BatchResult(3, 100, 90, 10, 0, 90, 2, 0.2), lag=5)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        metrics.close()
    assert "lambdaflow_speed_quarantined_records_total 10.0" in body
    assert "lambdaflow_speed_consumer_lag 5.0" in body and "lambdaflow_speed_model_version 2.0" in body


def test_labels_land_in_master_labels(speed_env: SpeedEnv) -> None:
    sample = generate(3000, days=20, seed=4)
    send(speed_env, sample.events, sample.labels)
    drain(speed_env)
    labels = SpeedTables(speed_env.settings).labels.snapshot().to_arrow()
    assert sorted(labels.column("event_id").to_pylist()) == sorted(sample.labels.column("event_id").to_pylist())
    assert labels.column("_kafka_offset").null_count == 0  # the label rows carry their Kafka coordinates too
