"""The Lambda invariant under any interleaving: a hypothesis state machine over the real stack.

Rules, in any order: produce events (late ones, repeated deliveries, poison), run
the speed layer, crash it at a commit point and restart it, run a step of the
batch cycle (views, training set, publish, expire, maintain), promote a model.
After every step two invariants must hold:

* ``verify`` finds no difference between every unified view and a from-scratch recompute;
* the speed layer's view state (what features are computed from) equals a recompute from
  ``master/events``.

Small data (tens of events per step), few examples: it must run in minutes on two cores.
Interleavings like "maintain right after publish" are what hand-written scenarios miss.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test
from kafka import KafkaProducer

from batch_layer import cycle
from batch_layer.training import build_training_set
from batch_layer.views import recompute_views
from lambdaflow import producer, registry, services
from lambdaflow.contracts.master import first_copies
from lambdaflow.contracts.speed import SpeedTables
from lambdaflow.faults import CRASH_AT_ENV, CRASH_MODE_ENV, SimulatedCrash
from lambdaflow.sample_data import default_start, generate
from serving_layer.verify import verify
from speed_layer.runner import SpeedLayer
from speed_layer.state import PriorState
from tests.conftest import make_env

pytestmark = pytest.mark.integration

POISON = [b"\xff\xfe", b"{broken", b'{"event_id": "x", "amount": "lots"}', b"[]", b'{"event_id": "\\ud800"}', b"[" * 3000]
COMMIT_POINTS = ["master/events", "quarantine", "master/labels", "speed/account_hourly", "speed/account_profile", "predictions"]


class LambdaMachine(RuleBasedStateMachine):
    """One pipeline on the session's Apache Kafka and Spark, driven by hypothesis."""

    tmp: ClassVar[Path]
    bootstrap: ClassVar[list[str]]
    spark: ClassVar[Any]

    @initialize()
    def fresh_pipeline(self) -> None:
        home = self.tmp / uuid.uuid4().hex[:8]
        home.mkdir()
        self.env = make_env(home, self.bootstrap, max_batch_seconds=0.3)
        self.settings = self.env.settings
        self.sent: list[pa.Table] = []
        self.clock = default_start(3)  # the past, inside the pipeline's accepted event-time window
        self.master_version: int | None = None
        self.seed = 0
        topic = self.settings.pipeline.source.topic
        for t in (topic, self.settings.pipeline.labels.topic):  # type: ignore[union-attr]
            services.ensure_topic(self.bootstrap, t, self.settings.pipeline.source.partitions)
        # some history already ingested, so every rule meets a pipeline with state from its first step
        self.produce(n=40, late_minutes=0, repeat=0, poison=1)
        self.speed()

    # ------------------------------------------------------------------ rules

    @rule(n=st.integers(1, 60), late_minutes=st.integers(0, 180), repeat=st.integers(0, 10), poison=st.integers(0, 3))
    def produce(self, n: int, late_minutes: int, repeat: int, poison: int) -> None:
        self.seed += 1
        start = self.clock - dt.timedelta(minutes=late_minutes)  # late events land in already-published buckets
        sample = generate(n, days=0.05, seed=self.seed, start=start, accounts=12)
        self.clock += dt.timedelta(hours=1)
        events = sample.events
        if repeat and self.sent:  # a retrying producer repeats recent events (the documented dedupe horizon)
            recent = self.sent[-1]
            events = pa.concat_tables([events, recent.slice(0, min(repeat, recent.num_rows))])
        self.sent.append(sample.events)
        producer.produce(self.bootstrap, producer.pipeline_streams(self.settings.pipeline, events, sample.labels))
        if poison:
            kafka = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            for i in range(poison):
                kafka.send(self.settings.pipeline.source.topic, key=b"poison", value=POISON[(self.seed + i) % len(POISON)])
            kafka.flush()
            kafka.close()

    @rule()
    def speed(self) -> None:
        SpeedLayer(self.settings, metrics_port=0).run(idle_exit_seconds=1.0)

    @precondition(lambda self: bool(self.sent))
    @rule(k=st.integers(1, 10))
    def redeliver_ingested_events(self, k: int) -> None:
        """A retrying producer: events the speed layer may already have ingested arrive again, then it runs."""
        recent = self.sent[-1]
        producer.produce(self.bootstrap, producer.pipeline_streams(self.settings.pipeline, recent.slice(0, min(k, recent.num_rows))))
        self.speed()

    @rule(point=st.sampled_from(COMMIT_POINTS))
    def crash_and_restart(self, point: str) -> None:
        seq = SpeedTables(self.settings).master.version() + 1  # the next micro-batch becomes master's next version
        os.environ[CRASH_AT_ENV], os.environ[CRASH_MODE_ENV] = f"after:{point}:{seq}", "raise"
        try:
            SpeedLayer(self.settings, metrics_port=0).run(idle_exit_seconds=1.0)
        except SimulatedCrash:
            pass  # the process died at the commit point: its objects are gone
        finally:
            del os.environ[CRASH_AT_ENV], os.environ[CRASH_MODE_ENV]
        SpeedLayer(self.settings, metrics_port=0).run(idle_exit_seconds=1.0)  # the restart recovers

    @precondition(lambda self: SpeedTables(self.settings).master.snapshot().num_records > 0)
    @rule()
    def batch_views(self) -> None:
        self.master_version = cycle.snapshot(self.settings)["master_version"]
        recompute_views(self.settings, self.spark, self.master_version)

    @precondition(lambda self: self.master_version is not None)
    @rule()
    def training_set(self) -> None:
        build_training_set(self.settings, self.spark, self.master_version)

    @precondition(lambda self: self.master_version is not None)
    @rule()
    def publish(self) -> None:
        cycle.publish(self.settings, uuid.uuid4().hex, self.master_version)  # type: ignore[arg-type]

    @rule()
    def expire(self) -> None:
        cycle.expire(self.settings)

    @rule()
    def maintain(self) -> None:
        cycle.maintain(self.settings, retention_hours=1)

    @rule()
    def promote_a_model(self) -> None:
        import tempfile

        import xgboost as xgb

        names = [f.name for f in self.settings.pipeline.features]
        rng = np.random.default_rng(self.seed)
        booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(rng.normal(size=(50, len(names))), rng.integers(0, 2, 50)), 2)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / registry.BOOSTER_FILE
            booster.save_model(str(path))
            c = registry.client(self.settings)
            run = c.create_run(registry.experiment_id(self.settings)).info.run_id
            registry.promote(self.settings, registry.register(self.settings, run, path, names, 0, {}))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def unified_equals_recompute(self) -> None:
        if not hasattr(self, "settings"):
            return
        checks = verify(self.settings)
        assert all(c.ok for c in checks), [(c.view, c.examples) for c in checks if not c.ok]

    @invariant()
    def each_event_once(self) -> None:
        """One row per event id in master/events and in predictions; each Kafka record in master at most once."""
        if not hasattr(self, "settings"):
            return
        tables = SpeedTables(self.settings)
        if not tables.master.exists():
            return
        master = tables.master.snapshot().to_arrow(columns=["event_id", "_kafka_partition", "_kafka_offset"])
        assert len(set(master["event_id"].to_pylist())) == master.num_rows
        coords = list(zip(master["_kafka_partition"].to_pylist(), master["_kafka_offset"].to_pylist(), strict=True))
        assert len(set(coords)) == len(coords)
        predicted = tables.predictions.snapshot().to_arrow(columns=["event_id"])["event_id"].to_pylist()
        assert len(set(predicted)) == len(predicted)

    @invariant()
    def speed_state_equals_recompute(self) -> None:
        if not hasattr(self, "settings"):
            return
        tables = SpeedTables(self.settings)
        if not tables.master.exists() or tables.master.snapshot().num_records == 0:
            return
        prior = PriorState(self.settings, tables)
        prior.load()
        spec = self.settings.pipeline.events
        master = first_copies(tables.master.snapshot().to_arrow(), spec.id_column, spec.time_column)
        for name, view in prior.views.items():
            want = view.finalize_arrow(view.partials_arrow(master))
            got = view.finalize_arrow(prior.states[name])
            key = [(c, "ascending") for c in view.group_columns]
            assert _close(got.sort_by(key).to_pylist(), want.sort_by(key).to_pylist()), name


def _close(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Rows equal, floats up to rounding (merge order changes the last bits of a mean)."""
    import math

    def same(x: Any, y: Any) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)
        return bool(x == y)

    return len(a) == len(b) and all(r.keys() == s.keys() and all(same(r[k], s[k]) for k in r) for r, s in zip(a, b, strict=True))


def test_lambda_invariants_hold_under_any_interleaving(tmp_path: Path, kafka: list[str], spark: Any) -> None:
    LambdaMachine.tmp, LambdaMachine.bootstrap, LambdaMachine.spark = tmp_path, kafka, spark
    run_state_machine_as_test(
        LambdaMachine,
        settings=settings(max_examples=3, stateful_step_count=12, deadline=None, suppress_health_check=list(HealthCheck)),
    )
