"""Every kind of bad record gets a reason; good ones pass with their types."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lambdaflow.config import load_pipeline
from lambdaflow.validation import RawRecord, Validator
from tests.conftest import ROOT

PIPELINE = load_pipeline(ROOT / "conf/pipeline.yaml")
VALIDATOR = Validator(PIPELINE.events.fields, PIPELINE.source.max_payload_bytes)
GOOD = {
    "event_id": "e1",
    "account_id": "acc-1",
    "merchant_id": "m-1",
    "mcc": 5411,
    "amount": 12.5,
    "currency": "EUR",
    "country": "DE",
    "channel": "pos",
    "card_present": True,
    "event_time": "2026-01-01T10:00:00.000001Z",
}


def rec(value: bytes | None, offset: int = 0) -> RawRecord:
    return RawRecord("transactions", 0, offset, b"k", value)


def with_(**changes) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


#: (payload, expected reason fragment) for every kind of malformed record.
BAD = [
    (b"\xff\xfe not utf-8", "undecodable"),
    (b"{not json", "undecodable"),
    (b"[1, 2, 3]", "expected a JSON object"),
    (None, "empty record"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "amount"}).encode(), "missing field(s) ['amount']"),
    (with_(amount="12.5"), "field 'amount': expected a number"),
    (with_(mcc=12.7), "field 'mcc': expected an integer"),
    (with_(card_present="yes"), "field 'card_present': expected true or false"),
    (with_(event_time="yesterday"), "field 'event_time': expected an ISO 8601 timestamp"),
    (with_(amount=-3.0), "field 'amount': -3.0 is below min 0"),
    (with_(amount=2e6), "above max"),
    (with_(currency="XXX"), "is not one of"),
    (with_(account_id="a" * 40), "more than max_length 32"),
    (with_(account_id=None), "is null but not nullable"),
    (with_(note="x" * 20000), "oversized payload"),
]


@pytest.mark.parametrize(("payload", "reason"), BAD)
def test_each_kind_of_bad_record_is_rejected_with_its_reason(payload: bytes | None, reason: str) -> None:
    valid, accepted, rejects = VALIDATOR.validate([rec(payload)])
    assert valid.num_rows == 0 and not accepted
    assert len(rejects) == 1 and reason in rejects[0].reason, rejects[0].reason


def test_good_records_keep_order_and_types() -> None:
    records = [rec(with_(event_id=f"e{i}", amount=float(i)), i) for i in range(5)] + [rec(b"junk", 99)]
    valid, accepted, rejects = VALIDATOR.validate(records)
    assert valid.column("event_id").to_pylist() == [f"e{i}" for i in range(5)]
    assert [r.offset for r in accepted] == [0, 1, 2, 3, 4] and [r.record.offset for r in rejects] == [99]
    assert valid.column("event_time")[0].as_py() == dt.datetime(2026, 1, 1, 10, 0, 0, 1, tzinfo=dt.timezone.utc)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(payload: bytes) -> None:
    valid, accepted, rejects = VALIDATOR.validate([rec(payload)])
    assert valid.num_rows + len(rejects) == 1
