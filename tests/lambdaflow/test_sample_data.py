"""The sample generator: deterministic, structured, with labels that arrive later."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambdaflow.config import load_pipeline
from lambdaflow.sample_data import EVENT_SCHEMA, generate
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def sample():
    return generate(50_000, days=30, seed=11)


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b, c = generate(3000, 7, seed=1), generate(3000, 7, seed=1), generate(3000, 7, seed=2)
    assert a.events.equals(b.events) and a.labels.equals(b.labels)
    assert not a.events.equals(c.events)


def test_events_match_the_pipeline_schema_and_are_time_ordered(sample) -> None:
    pipeline = load_pipeline(ROOT / "conf/pipeline.yaml")
    assert set(pipeline.events.fields) == set(EVENT_SCHEMA.names)
    times = pc.cast(sample.events["event_time"], "int64").to_numpy()
    assert (np.diff(times) >= 0).all()
    assert pc.count_distinct(sample.events["event_id"]).as_py() == sample.events.num_rows
    for name, spec in pipeline.events.fields.items():
        column = sample.events[name]
        if spec.allowed:
            assert set(column.unique().to_pylist()) <= set(spec.allowed), name
        if spec.min is not None:
            assert pc.min(column).as_py() >= spec.min and pc.max(column).as_py() <= spec.max, name


def test_fraud_rate_is_a_few_percent(sample) -> None:
    assert 0.005 < sample.fraud_rate < 0.05


def test_chargebacks_arrive_after_their_event(sample) -> None:
    events = sample.events.select(["event_id", "event_time"])
    joined = sample.labels.join(events, "event_id")
    assert joined.num_rows == sample.labels.num_rows
    delay = pc.cast(joined["reported_at"], "int64").to_numpy() - pc.cast(joined["event_time"], "int64").to_numpy()
    assert (delay >= 3600 * 1e6).all() and (delay <= 41 * 86400 * 1e6).all()
    # most fraud gets reported; almost no legitimate payment does
    fraud_ids = set(sample.events["event_id"].filter(sample.is_fraud).to_pylist())
    reported = set(sample.labels["event_id"].to_pylist())
    assert len(reported & fraud_ids) / len(fraud_ids) > 0.8
    assert len(reported - fraud_ids) < 0.01 * len(reported) + 50


def test_fraud_looks_different_from_normal_spending(sample) -> None:
    """The patterns are learnable: risky merchant categories and bursts concentrate in fraud."""
    mcc = sample.events["mcc"].to_numpy()
    risky = np.isin(mcc, [5732, 5944, 5967, 5816])
    assert risky[sample.is_fraud].mean() > 0.9
    assert risky[~sample.is_fraud].mean() < 0.05


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 3000), st.floats(0.5, 60), st.integers(0, 2**31))
def test_exactly_the_requested_number_of_events_within_the_period(n: int, days: float, seed: int) -> None:
    data = generate(n, days, seed)
    assert data.events.num_rows == n
    times = pc.cast(data.events["event_time"], "int64")
    start = pc.min(times).as_py()
    assert pc.max(times).as_py() - start < days * 86400e6
