"""Scale-out on the real broker: three instances in one consumer group, killed, scaled 3 → 2 → 3, and a stale twin.

The must-show of #13: whatever the group does with the partitions, ``master/events`` holds every event once,
every speed partial belongs to one committed micro-batch, ``verify`` finds no difference, and every event was
scored with the features the training set computes for it (in ingest order over all writers).
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from dataclasses import replace

import numpy as np
import pyarrow.compute as pc
import yaml

from lambdaflow.config import load_settings
from lambdaflow.contracts.speed import SpeedTables
from lambdaflow.errors import FencedError
from lambdaflow.features import FeatureFunction
from lambdaflow.sample_data import generate
from lambdaflow.schemas import INGEST_SEQ
from serving_layer.verify import verify
from tests.conftest import SpeedEnv, make_env
from tests.speed_layer.test_speed_layer import check_exactly_once, send, start

EVENTS = 200_000
PARTITIONS = 6


def scaled_env(tmp_path, kafka: list[str]) -> SpeedEnv:
    env = make_env(tmp_path, kafka, instances=3)
    pipeline = yaml.safe_load(env.pipeline_path.read_text())
    pipeline["source"]["partitions"] = PARTITIONS
    env.pipeline_path.write_text(yaml.safe_dump(pipeline))
    return replace(env, settings=load_settings(str(env.profile_path), env.pipeline_path))


class Fleet:
    """The instances of the speed layer, as processes, by identity (a twin is kept beside them)."""

    def __init__(self, env: SpeedEnv) -> None:
        self.env = env
        self.procs: dict[int, subprocess.Popen[str]] = {}
        self.exits: list[tuple[int, int, str]] = []

    def start(self, k: int) -> subprocess.Popen[str]:
        proc = start(self.env, "--instance", str(k))
        self.procs[k] = proc
        return proc

    def kill(self, k: int) -> None:
        self.procs[k].send_signal(signal.SIGKILL)
        self.procs[k].wait(timeout=30)

    def stop(self, k: int) -> int:
        proc = self.procs.pop(k)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        self.exits.append((k, proc.returncode, err[-2000:]))
        return proc.returncode

    def check_alive(self) -> None:
        for k, proc in self.procs.items():
            assert proc.poll() is None, f"instance {k} exited {proc.returncode}: {proc.communicate()[1][-4000:]}"


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.5)


def test_three_instances_through_kills_scaling_and_a_twin_ingest_exactly_once(kafka: list[str], tmp_path) -> None:
    env = scaled_env(tmp_path, kafka)
    events = generate(EVENTS, days=10, seed=131).events
    send(env, events.slice(0, 1000))  # the topics exist before the group forms
    chunks = 20
    size = (EVENTS - 1000) // chunks + 1

    def produce() -> None:
        for i in range(chunks):
            send(env, events.slice(1000 + i * size, size))
            time.sleep(1.0)

    producer = threading.Thread(target=produce)
    fleet = Fleet(env)
    rng = random.Random(13)
    master = SpeedTables(env.settings).master
    try:
        for k in range(3):
            fleet.start(k)
        producer.start()
        time.sleep(8)
        for _ in range(2):  # SIGKILL at a random point, restart a moment later
            k = rng.randrange(3)
            fleet.kill(k)
            time.sleep(rng.uniform(0.5, 2))
            fleet.start(k)
            time.sleep(rng.uniform(2, 5))
        fleet.check_alive()
        assert fleet.stop(2) == 0  # scale 3 -> 2: SIGTERM finishes the batch, the group moves its partitions
        time.sleep(6)
        fleet.kill(0)
        fleet.start(0)
        # a stale twin: a second process as instance 1 while the first still runs; one of them must stop
        first = fleet.procs[1]
        twin = start(env, "--instance", "1")
        wait_for(lambda: first.poll() is not None or twin.poll() is not None, 120, "one of the two instance-1 processes to stop")
        loser, survivor = (first, twin) if first.poll() is not None else (twin, first)
        _, err = loser.communicate(timeout=30)
        assert loser.returncode == FencedError.exit_code, err[-3000:]
        assert "stops" in err and ("static member" in err or "another process runs as speed-layer writer" in err or "another writer" in err)
        fleet.procs[1] = survivor
        fleet.start(2)  # scale 2 -> 3
        time.sleep(4)
        k = rng.randrange(3)
        fleet.kill(k)
        fleet.start(k)
        producer.join()
        fleet.check_alive()
        wait_for(lambda: master.snapshot().num_records >= EVENTS, 300, f"{EVENTS:,} events in master/events")
        time.sleep(3)  # the last batches complete their other tables
        for k in list(fleet.procs):
            assert fleet.stop(k) == 0, fleet.exits[-1][2]
    finally:
        for proc in fleet.procs.values():
            proc.kill()
        producer.join(timeout=120)

    check_exactly_once(env, events.column("event_id").to_pylist())
    assert all(check.ok for check in verify(env.settings)), [c for c in verify(env.settings) if not c.ok]
    writers = {commit["lambdaflow.app"] for commit in master.history() if "lambdaflow.app" in commit}
    assert len(writers) == 3  # all three identities committed
    check_features_as_trained(env)


def check_features_as_trained(env: SpeedEnv) -> None:
    """Every event was scored with the features computed over master in ingest order (over all writers)."""
    tables = SpeedTables(env.settings)
    rows = tables.master.snapshot().to_arrow()
    want = FeatureFunction(env.settings.pipeline).compute(rows)
    predictions = tables.predictions.snapshot().to_arrow()
    order = pc.index_in(rows.column("event_id"), predictions.column("event_id"))
    got = np.array(predictions.take(order).column("features").to_pylist())
    names = FeatureFunction(env.settings.pipeline).names
    expected = np.column_stack([want.column(n).to_numpy(zero_copy_only=False).astype(float) for n in names])
    bad = ~np.isclose(got, expected, rtol=1e-9, equal_nan=True)
    assert not bad.any(), f"{bad.any(axis=1).sum()} events scored with features other than their training features"
    assert len(set(rows.column(INGEST_SEQ).to_pylist())) >= 30
