"""A deterministic generator of card transactions and the chargebacks that arrive days later.

The structure is meant to be learnable, as real fraud is:

* accounts have a home country and currency, a typical amount, preferred
  merchants, an activity level and a daily rhythm;
* merchants have a category (MCC), a country and a channel;
* about 8% of accounts are compromised once in the period. Their fraud shows up
  as **card testing** (a burst of tiny online payments at risky merchants within
  minutes, then a few large ones) or an **account takeover** (large amounts at
  unusual merchants, abroad, at odd hours);
* most fraud is charged back 1–40 days later (a label on its own topic); a few
  legitimate payments are disputed too (label noise).

Everything is drawn from one seeded ``numpy`` generator: the same arguments give
the same events, byte for byte.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lambdaflow.config import PipelineConfig

#: Merchant categories: (mcc, channel, typical amount multiplier, risky for fraud).
_CATEGORIES: list[tuple[int, str, float, bool]] = [
    (5411, "pos", 1.0, False),  # groceries
    (5812, "pos", 0.8, False),  # restaurants
    (5541, "pos", 1.2, False),  # fuel
    (5311, "pos", 1.5, False),  # department stores
    (4111, "pos", 0.3, False),  # transit
    (5999, "online", 1.1, False),  # online retail
    (4899, "online", 0.7, False),  # subscriptions
    (6011, "atm", 2.0, False),  # cash
    (5732, "online", 6.0, True),  # electronics
    (5944, "pos", 8.0, True),  # jewellery
    (5967, "online", 0.2, True),  # direct marketing: card-testing ground
    (5816, "online", 0.3, True),  # digital goods
]
_COUNTRIES = np.array(["DE", "FR", "GB", "US", "CH", "PL", "SE", "NL", "ES", "IT"])
_CURRENCY_OF = {
    "DE": "EUR",
    "FR": "EUR",
    "GB": "GBP",
    "US": "USD",
    "CH": "CHF",
    "PL": "PLN",
    "SE": "SEK",
    "NL": "EUR",
    "ES": "EUR",
    "IT": "EUR",
}

EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("account_id", pa.string()),
        ("merchant_id", pa.string()),
        ("mcc", pa.int32()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("country", pa.string()),
        ("channel", pa.string()),
        ("card_present", pa.bool_()),
        ("event_time", pa.timestamp("us", tz="UTC")),
    ]
)
LABEL_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("account_id", pa.string()),
        ("is_fraud", pa.bool_()),
        ("reported_at", pa.timestamp("us", tz="UTC")),
    ]
)
#: Sample history ends this long before today's midnight (UTC), so a following day of "live" events is past too.
HISTORY_ENDS_BEFORE = dt.timedelta(days=2)


def default_start(days: float) -> dt.datetime:
    """Where a sample of ``days`` days starts by default: it ends :data:`HISTORY_ENDS_BEFORE` today's midnight.

    Relative to today, not a fixed date: pipelines accept events only within a window of their
    ingest time (``events.max_age``), and a fixed date would drift out of it.
    """
    midnight = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - HISTORY_ENDS_BEFORE - dt.timedelta(days=math.ceil(days))


def missing_fields(pipeline: PipelineConfig) -> list[str]:
    """Event fields the pipeline declares that the sample does not make (empty: the sample fits the pipeline)."""
    return sorted(set(pipeline.events.fields) - set(EVENT_SCHEMA.names))


@dataclass(frozen=True)
class SampleData:
    """Generated events (sorted by event time), chargebacks (sorted by report time) and the truth."""

    events: pa.Table
    labels: pa.Table
    is_fraud: np.ndarray  # ground truth per event row, for tests and reports

    @property
    def fraud_rate(self) -> float:
        return float(self.is_fraud.mean()) if len(self.is_fraud) else 0.0


def generate(
    events: int,
    days: float = 30.0,
    seed: int = 7,
    start: dt.datetime | None = None,
    accounts: int | None = None,
) -> SampleData:
    """Generate about ``events`` card transactions over ``days`` days.

    Args:
        events: number of transactions (exactly this many are returned).
        days: length of the simulated period.
        seed: seed of the random generator.
        start: first possible event time (UTC); default :func:`default_start`.
        accounts: number of accounts; defaults to one per 40 events (at least 50).

    Raises:
        ValueError: ``events`` or ``days`` is not positive.
    """
    if events <= 0 or days <= 0:
        raise ValueError(f"events and days must be positive, got events={events}, days={days}")
    rng = np.random.default_rng(seed)
    n_acc = accounts or max(50, events // 40)
    n_merch = max(20, n_acc // 10)
    span_us = int(days * 86400e6)
    start = start if start is not None else default_start(days)
    start_us = int(start.timestamp() * 1e6)

    # Merchants and accounts.
    cat_of_merch = rng.integers(0, len(_CATEGORIES), n_merch)
    cat_mcc = np.array([c[0] for c in _CATEGORIES])
    cat_channel = np.array([c[1] for c in _CATEGORIES])
    cat_mult = np.array([c[2] for c in _CATEGORIES])
    cat_risky = np.array([c[3] for c in _CATEGORIES])
    rng.integers(0, len(_COUNTRIES), n_merch)  # merchant countries: unused so far, still drawn so every seed keeps its data
    safe_merch = np.flatnonzero(~cat_risky[cat_of_merch])
    risky_merch = np.flatnonzero(cat_risky[cat_of_merch])
    # a small sample may draw no merchant of a kind: lend one (seeds that drew both keep their data)
    if len(risky_merch) == 0:
        risky_merch = np.array([0])
    if len(safe_merch) == 0:
        safe_merch = np.array([n_merch - 1])
    testing_merch = np.flatnonzero(np.isin(cat_mcc[cat_of_merch], [5967, 5816]))
    if len(testing_merch) == 0:
        testing_merch = risky_merch

    acc_country = _COUNTRIES[rng.choice(len(_COUNTRIES), n_acc, p=_country_weights())]
    acc_mu = rng.normal(3.2, 0.6, n_acc)  # log of the typical amount
    acc_activity = rng.pareto(1.5, n_acc) + 0.2
    acc_peak_hour = rng.normal(14, 3, n_acc)
    acc_favs = rng.choice(safe_merch, (n_acc, 5))

    # Compromised accounts and their fraud.
    n_comp = max(1, int(n_acc * 0.08))  # ~2% of events end up fraudulent
    compromised = rng.choice(n_acc, n_comp, replace=False)
    fraud_parts = [_fraud_events(rng, a, acc_mu[a], start_us, span_us, testing_merch, risky_merch, acc_country[a]) for a in compromised]
    f_acc = np.concatenate([p[0] for p in fraud_parts])
    f_merch = np.concatenate([p[1] for p in fraud_parts])
    f_amount = np.concatenate([p[2] for p in fraud_parts])
    f_country = np.concatenate([p[3] for p in fraud_parts])
    f_time = np.concatenate([p[4] for p in fraud_parts])
    n_fraud = min(len(f_acc), events // 10)
    f_acc, f_merch, f_amount, f_country, f_time = (x[:n_fraud] for x in (f_acc, f_merch, f_amount, f_country, f_time))

    # Legitimate events.
    n_legit = events - n_fraud
    l_acc = rng.choice(n_acc, n_legit, p=acc_activity / acc_activity.sum())
    fav = rng.random(n_legit) < 0.8
    # outside their favourites, people sometimes buy electronics or jewellery too (so MCC alone is not the answer)
    other = np.where(rng.random(n_legit) < 0.15, rng.choice(risky_merch, n_legit), rng.choice(safe_merch, n_legit))
    l_merch = np.where(fav, acc_favs[l_acc, rng.integers(0, 5, n_legit)], other)
    l_amount = np.exp(acc_mu[l_acc] + rng.normal(0, 0.5, n_legit)) * cat_mult[cat_of_merch[l_merch]]
    abroad = rng.random(n_legit) < 0.03
    l_country = np.where(abroad, _COUNTRIES[rng.integers(0, len(_COUNTRIES), n_legit)], acc_country[l_acc])
    day = rng.integers(0, max(1, int(np.ceil(days))), n_legit)
    hour = np.clip(rng.normal(acc_peak_hour[l_acc], 3.0), 0, 23.999)
    l_time = start_us + (day * 86400 + hour * 3600).astype(np.int64) * 1_000_000 + rng.integers(0, 1_000_000, n_legit)
    l_time = np.minimum(l_time, start_us + span_us - 1)

    acc = np.concatenate([l_acc, f_acc])
    merch = np.concatenate([l_merch, f_merch])
    amount = np.round(np.clip(np.concatenate([l_amount, f_amount]), 0.01, 50_000), 2)
    country = np.concatenate([l_country, f_country])
    times = np.concatenate([l_time, f_time])
    truth = np.concatenate([np.zeros(n_legit, bool), np.ones(n_fraud, bool)])

    order = np.argsort(times, kind="stable")
    acc, merch, amount, country, times, truth = (x[order] for x in (acc, merch, amount, country, times, truth))
    cat = cat_of_merch[merch]
    channel = cat_channel[cat]
    ids = _event_ids(rng, events)
    table = pa.table(
        {
            "event_id": ids,
            "account_id": pa.array(np.char.add("acc-", np.char.zfill(acc.astype(str), 7))),
            "merchant_id": pa.array(np.char.add("m-", np.char.zfill(merch.astype(str), 6))),
            "mcc": pa.array(cat_mcc[cat].astype(np.int32)),
            "amount": pa.array(amount),
            "currency": pa.array([_CURRENCY_OF[c] for c in acc_country[acc]]),
            "country": pa.array(country),
            "channel": pa.array(channel),
            "card_present": pa.array(channel != "online"),
            "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
        },
        schema=EVENT_SCHEMA,
    )
    return SampleData(table, _chargebacks(rng, table, truth), truth)


def _country_weights() -> np.ndarray:
    w = np.array([5, 4, 4, 6, 1, 2, 1, 2, 3, 3], float)
    return w / w.sum()


def _fraud_events(
    rng: np.random.Generator,
    account: int,
    mu: float,
    start_us: int,
    span_us: int,
    testing_merch: np.ndarray,
    risky_merch: np.ndarray,
    home: str,
) -> tuple[np.ndarray, ...]:
    """One compromise of an account: a card-testing burst or an account takeover."""
    t0 = start_us + int(rng.integers(0, max(1, span_us - 3_600_000_000)))
    if rng.random() < 0.5:  # card testing: tiny online payments within minutes, then big ones
        n_test, n_big = int(rng.integers(5, 16)), int(rng.integers(1, 4))
        gaps = rng.integers(5, 90, n_test + n_big).cumsum() * 1_000_000
        merch = np.concatenate([rng.choice(testing_merch, n_test), rng.choice(risky_merch, n_big)])
        amount = np.concatenate([rng.uniform(0.5, 3.0, n_test), np.exp(mu + rng.uniform(1.5, 3.0, n_big))])
    else:  # account takeover: large amounts abroad, at night
        n_big = int(rng.integers(2, 6))
        t0 = t0 - t0 % 86_400_000_000 + int(rng.uniform(1, 5) * 3_600_000_000)
        gaps = rng.integers(60, 1800, n_big).cumsum() * 1_000_000
        merch = rng.choice(risky_merch, n_big)
        amount = np.exp(mu + rng.uniform(1.8, 3.2, n_big))
    n = len(merch)
    foreign = _COUNTRIES[_COUNTRIES != home]
    country = np.where(rng.random(n) < 0.7, rng.choice(foreign, n), home)
    times = np.minimum(t0 + gaps, start_us + span_us - 1)
    return np.full(n, account), merch, amount, country, times


def _event_ids(rng: np.random.Generator, n: int) -> pa.Array:
    raw = rng.integers(0, 2**63 - 1, (n, 2), dtype=np.int64)
    return pa.array([f"{a:016x}{b:016x}" for a, b in raw.tolist()])


def _chargebacks(rng: np.random.Generator, events: pa.Table, truth: np.ndarray) -> pa.Table:
    n = events.num_rows
    reported = (truth & (rng.random(n) < 0.92)) | (~truth & (rng.random(n) < 0.0005))
    idx = np.flatnonzero(reported)
    delay_us = (rng.gamma(2.0, 4.0, len(idx)) * 86400e6 + 3_600e6).astype(np.int64)
    times = pc.cast(events.column("event_time"), pa.int64()).to_numpy()[idx] + np.minimum(delay_us, int(40 * 86400e6))
    labels = pa.table(
        {
            "event_id": events.column("event_id").take(idx),
            "account_id": events.column("account_id").take(idx),
            "is_fraud": pa.array(np.ones(len(idx), bool)),
            "reported_at": pa.array(times, pa.timestamp("us", tz="UTC")),
        },
        schema=LABEL_SCHEMA,
    )
    return labels.sort_by("reported_at")
