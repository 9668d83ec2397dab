"""The one feature function: brute-force exact, and the same whether fed all at once or micro-batch by micro-batch."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lambdaflow.config import PipelineConfig, load_pipeline
from lambdaflow.contracts.master import to_master_rows
from lambdaflow.features import FeatureFunction
from lambdaflow.sample_data import generate
from tests.conftest import ROOT

PIPELINE = load_pipeline(ROOT / "conf/pipeline.yaml")
FF = FeatureFunction(PIPELINE)
HOUR = 3_600_000_000
DAY = 24 * HOUR


def brute_force(rows: list[dict], i: int) -> dict[str, float]:
    """Features of row i from first principles: rows of the same account (or merchant) before it, by hand."""
    me = rows[i]
    prev = [r for r in rows[:i] if r["account_id"] == me["account_id"]]
    hour = me["event_time"] // HOUR
    in_window = lambda r, hours: hour - hours < r["event_time"] // HOUR <= hour  # noqa: E731
    day = me["event_time"] // DAY
    merchant = [r for r in rows[:i] if r["merchant_id"] == me["merchant_id"]]
    in_days = lambda r, days: day - days < r["event_time"] // DAY <= day  # noqa: E731
    last_24h = [r for r in prev if in_window(r, 24)]
    online_1h = [r for r in prev if in_window(r, 1) and r["channel"] == "online"]
    amounts = [r["amount"] for r in prev]
    mean = float(np.mean(amounts)) if amounts else float("nan")
    return {
        "amount": me["amount"],
        "txn_count_1h": float(sum(1 for r in prev if in_window(r, 1))),
        "txn_count_24h": float(len(last_24h)),
        "amount_sum_24h": float(sum(r["amount"] for r in last_24h)),  # a feature sum over nothing is 0
        "online_count_1h": float(len(online_1h)),
        "online_min_amount_1h": min((r["amount"] for r in online_1h), default=float("nan")),
        "lifetime_count": float(len(prev)),
        "lifetime_amount_mean": mean,
        "lifetime_amount_std": float(np.std(amounts, ddof=1)) if len(amounts) > 1 else float("nan"),
        "merchant_txn_count_1d": float(sum(1 for r in merchant if in_days(r, 1))),
        "merchant_amount_sum_7d": float(sum(r["amount"] for r in merchant if in_days(r, 7))),
        "amount_vs_mean": 0.0 if mean == 0 else me["amount"] / mean,
    }


def test_features_equal_a_brute_force_reference() -> None:
    events = generate(1500, days=2, seed=13, accounts=20).events
    master = to_master_rows(events, PIPELINE.events, 1)
    got = FF.compute(master).to_pylist()
    rows = [{**r, "event_time": int(r["event_time"].timestamp() * 1e6)} for r in events.to_pylist()]
    for i in range(0, len(rows), 7):
        want = brute_force(rows, i)
        for name, value in want.items():
            assert np.isclose(got[i][name], value, equal_nan=True, rtol=1e-9), (i, name, got[i][name], value)


def _with_positions(events: pa.Table, seqs: list[int]) -> pa.Table:
    out = []
    for seq, (start, stop) in enumerate(zip([0, *seqs], [*seqs, events.num_rows]), start=1):
        out.append(to_master_rows(events.slice(start, stop - start), PIPELINE.events, seq))
    return pa.concat_tables(out)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31), st.lists(st.integers(1, 599), max_size=4, unique=True))
def test_micro_batches_with_prior_state_equal_all_at_once(seed: int, cuts: list[int]) -> None:
    """Speed-layer parity: batch by batch, with the merged partials of earlier batches as prior state."""
    events = generate(600, days=2, seed=seed, accounts=12).events
    cuts = sorted(cuts)
    master = _with_positions(events, cuts)
    whole = FF.compute(master)
    parts, prior = [], None
    bounds = [0, *cuts, events.num_rows]
    for start, stop in zip(bounds, bounds[1:]):
        batch = master.slice(start, stop - start)
        parts.append(FF.compute(batch, prior))
        seen = master.slice(0, stop)
        prior = {name: view.merge_arrow([view.partials_arrow(seen)]) for name, view in FF.views.items()}
    incremental = pa.concat_tables(parts)
    for name in FF.names:
        a, b = whole[name].to_numpy(zero_copy_only=False), incremental[name].to_numpy(zero_copy_only=False)
        assert np.allclose(a, b, equal_nan=True, rtol=1e-9), name


def test_late_event_sees_only_what_preceded_it_in_partition_order() -> None:
    t0 = dt.datetime(2026, 1, 5, 12, tzinfo=dt.timezone.utc)
    events = generate(3, days=1, seed=1, accounts=1).events
    times = [t0, t0 + dt.timedelta(minutes=10), t0 - dt.timedelta(minutes=30)]  # the third arrives late
    events = events.set_column(events.schema.get_field_index("event_time"), "event_time", pa.array(times, pa.timestamp("us", tz="UTC")))
    offsets = pa.array([10, 11, 12], pa.int64())  # the order the broker delivered them in
    rows = to_master_rows(events, PIPELINE.events, 1, pa.array([0, 0, 0], pa.int32()), offsets)
    got = FF.compute(rows).to_pylist()
    assert [r["lifetime_count"] for r in got] == [0, 1, 2]  # partition order, not event time
    assert got[2]["txn_count_1h"] == 0  # 11:30 is another hour than the two 12:xx events


def test_unknown_category_and_missing_values() -> None:
    events = generate(5, days=1, seed=3).events
    events = events.set_column(events.schema.get_field_index("channel"), "channel", pa.array(["pos", "online", "atm", "pos", "online"]))
    got = FF.compute(events)
    assert got["channel"].to_pylist() == [0.0, 1.0, 2.0, 0.0, 1.0]
    assert FF.names == [f.name for f in PIPELINE.features]


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31), st.lists(st.integers(1, 299), max_size=3, unique=True))
def test_null_keys_are_one_key_in_both_layers_when_the_pipeline_says_so(seed: int, cuts: list[int]) -> None:
    """Regression (events.null_keys: key): the speed layer never matched prior state for a null key, the batch did.

    Batch side: one call over all events. Speed side: micro-batches with the merged partials of earlier ones.
    """
    data = yaml.safe_load((ROOT / "conf/pipeline.yaml").read_text())
    data["events"]["fields"]["account_id"]["nullable"] = True
    data["events"]["null_keys"] = "key"
    pipeline = PipelineConfig.model_validate(data)
    ff = FeatureFunction(pipeline)
    events = generate(300, days=2, seed=seed, accounts=6).events
    keys = events.column("account_id").to_pylist()
    nulled = pa.array([None if i % 3 == 0 else k for i, k in enumerate(keys)], pa.string())
    events = events.set_column(events.schema.get_field_index("account_id"), "account_id", nulled)
    bounds = [0, *sorted(cuts), events.num_rows]
    master = pa.concat_tables(
        [to_master_rows(events.slice(a, b - a), pipeline.events, seq) for seq, (a, b) in enumerate(zip(bounds, bounds[1:]), start=1)]
    )
    whole = ff.compute(master)
    parts, prior = [], None
    for start, stop in zip(bounds, bounds[1:]):
        parts.append(ff.compute(master.slice(start, stop - start), prior))
        prior = {name: view.merge_arrow([view.partials_arrow(master.slice(0, stop))]) for name, view in ff.views.items()}
    incremental = pa.concat_tables(parts)
    null_rows = np.array([k is None for k in master.column("account_id").to_pylist()])
    assert whole["lifetime_count"].to_numpy()[null_rows].max() > 0  # the null key accumulates history like any key
    for name in ff.names:
        a, b = whole[name].to_numpy(zero_copy_only=False), incremental[name].to_numpy(zero_copy_only=False)
        assert np.allclose(a, b, equal_nan=True, rtol=1e-9), name


def test_null_keys_are_quarantined_by_default() -> None:
    from lambdaflow.producer import encode_row
    from lambdaflow.validation import RawRecord, Validator

    assert PIPELINE.events.null_keys == "quarantine"
    row = generate(1, days=1, seed=5).events.to_pylist()[0] | {"account_id": None}
    now = row["event_time"]
    valid, _, rejects = Validator.for_events(PIPELINE.events, 65536).validate([RawRecord("t", 0, 0, None, encode_row(row))], now=now)
    assert valid.num_rows == 0 and "account_id" in rejects[0].reason and "null" in rejects[0].reason


def _spread(events: pa.Table, pipeline: PipelineConfig, cuts: list[int], seed: int) -> pa.Table:
    """Master rows in micro-batches, each event in a random one of 4 Kafka partitions, offsets counting per partition."""
    rng = np.random.default_rng(seed)
    partitions = rng.integers(0, 4, events.num_rows)
    offsets = np.zeros(events.num_rows, np.int64)
    for p in range(4):
        offsets[partitions == p] = np.arange(int((partitions == p).sum()))
    bounds = [0, *sorted(cuts), events.num_rows]
    return pa.concat_tables(
        [
            to_master_rows(
                events.slice(a, b - a), pipeline.events, seq, pa.array(partitions[a:b], pa.int32()), pa.array(offsets[a:b], pa.int64())
            )
            for seq, (a, b) in enumerate(zip(bounds, bounds[1:]), start=1)
        ]
    )


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31), st.lists(st.integers(1, 399), max_size=3, unique=True))
def test_features_from_views_keyed_by_other_columns_follow_ingest_order(seed: int, cuts: list[int]) -> None:
    """A view keyed by the merchant, and one by (merchant, channel), feeding events partitioned by account.

    Their events are spread over partitions: an event sees those of its key in earlier micro-batches, then in
    the same micro-batch by (partition, offset). Checked by hand, and batch by batch with prior state (the speed
    layer) against all at once (the training set); a null merchant has no merchant history.
    """
    data = yaml.safe_load((ROOT / "conf/pipeline.yaml").read_text())
    data["events"]["fields"]["merchant_id"]["nullable"] = True
    data["views"].append(
        {
            "name": "merchant_channel",
            "keys": ["merchant_id", "channel"],
            "bucket": "1h",
            "aggregates": {"n": {"fn": "count"}, "top": {"fn": "max", "column": "amount"}},
        }
    )
    data["features"] += [
        {"kind": "view", "name": "mc_count_2h", "view": "merchant_channel", "aggregate": "n", "window": "2h"},
        {"kind": "view", "name": "mc_top_all", "view": "merchant_channel", "aggregate": "top"},
    ]
    pipeline = PipelineConfig.model_validate(data)
    ff = FeatureFunction(pipeline)
    events = generate(400, days=3, seed=seed, accounts=10).events
    rng = np.random.default_rng(seed)
    few = [f"m{int(i)}" if i < 5 else None for i in rng.integers(0, 6, events.num_rows)]  # 5 merchants and some nulls
    events = events.set_column(events.schema.get_field_index("merchant_id"), "merchant_id", pa.array(few, pa.string()))
    master = _spread(events, pipeline, cuts, seed)
    whole = ff.compute(master)

    rows = master.to_pylist()
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["_ingest_seq"], rows[i]["_kafka_partition"], rows[i]["_kafka_offset"]))
    for rank, i in enumerate(order[::3]):
        me = rows[i]
        before = [rows[j] for j in order[: order.index(i)]]
        mine = [r for r in before if r["merchant_id"] == me["merchant_id"]]
        same = [r for r in mine if r["channel"] == me["channel"]]
        hour = int(me["event_time"].timestamp()) // 3600
        hours = lambda r: int(r["event_time"].timestamp()) // 3600  # noqa: E731
        day = int(me["event_time"].timestamp()) // 86400
        want = {
            "merchant_txn_count_1d": float(sum(1 for r in mine if int(r["event_time"].timestamp()) // 86400 == day)),
            "mc_count_2h": float(sum(1 for r in same if hour - 2 < hours(r) <= hour)),
            "mc_top_all": max((r["amount"] for r in same), default=float("nan")),
        }
        if me["merchant_id"] is None:
            want = dict.fromkeys(want, float("nan"))
        for name, value in want.items():
            got = whole[name][i].as_py()
            assert np.isclose(got, value, equal_nan=True, rtol=1e-9), (rank, name, got, value)

    bounds = [0, *sorted(cuts), events.num_rows]
    parts, prior = [], None
    for start, stop in zip(bounds, bounds[1:]):
        parts.append(ff.compute(master.slice(start, stop - start), prior))
        prior = {name: view.merge_arrow([view.partials_arrow(master.slice(0, stop))]) for name, view in ff.views.items()}
    incremental = pa.concat_tables(parts)
    for name in ff.names:
        a, b = whole[name].to_numpy(zero_copy_only=False), incremental[name].to_numpy(zero_copy_only=False)
        assert np.allclose(a, b, equal_nan=True, rtol=1e-9), name
    assert np.isnan(whole["mc_top_all"].to_numpy(zero_copy_only=False)[[m is None for m in few]]).all()
    # one event at a time (as /features and a one-event micro-batch see it): the prior state is all there is
    for rank in range(0, events.num_rows, 67):
        i = order[rank]
        before = master.take(pa.array(order[:rank], pa.int64()))
        prior = {name: view.merge_arrow([view.partials_arrow(before)]) for name, view in ff.views.items()}
        one = ff.compute(master.slice(i, 1), prior)
        for name in ff.names:
            assert np.isclose(one[name][0].as_py(), whole[name][i].as_py(), equal_nan=True, rtol=1e-9), (i, name)
