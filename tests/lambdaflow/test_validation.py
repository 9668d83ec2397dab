"""Every kind of bad record gets a reason; good ones pass with their types; nothing ever raises.

Integration-free: no broker, no Spark. The property tests feed arbitrary bytes and mutated sample
events (deep nesting, huge numbers, surrogates, odd unicode, extreme timestamps, NaN, duplicate keys,
wrong nesting, truncation, byte flips) and check that validation accounts for every record.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambdaflow import bulk_validation, validation
from lambdaflow.config import ConfigError, PipelineConfig, load_pipeline
from lambdaflow.producer import encode_row
from lambdaflow.sample_data import generate
from lambdaflow.validation import RawRecord, Reject, Validator
from tests.conftest import ROOT

PIPELINE = load_pipeline(ROOT / "conf/pipeline.yaml")
VALIDATOR = Validator(PIPELINE.events.fields, PIPELINE.source.max_payload_bytes)
UTC = dt.timezone.utc
#: Ingest time of the windowed tests: the sample data (January 2026) and GOOD lie inside the default window.
NOW = dt.datetime(2026, 2, 1, tzinfo=UTC)
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


def with_(**changes: Any) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def raw_field(name: str, raw_json: str, row: dict[str, Any] | None = None) -> bytes:
    """``row`` (GOOD by default) with field ``name`` set to the literal JSON text ``raw_json``."""
    text = json.dumps({**(GOOD if row is None else row), name: "\x01PLACEHOLDER\x01"})
    return text.replace(json.dumps("\x01PLACEHOLDER\x01"), raw_json).encode("utf-8", "surrogatepass")


def windowed() -> Validator:
    return Validator.for_events(PIPELINE.events, PIPELINE.source.max_payload_bytes)


def check_accounting(records: list[RawRecord], result: tuple[Any, list[RawRecord], list[Reject]]) -> None:
    """Every record is a valid row or a reject with a storable reason; valid rows keep input order."""
    valid, accepted, rejects = result
    assert valid.num_rows == len(accepted)
    assert valid.num_rows + len(rejects) == len(records)
    order = {id(r): i for i, r in enumerate(records)}
    assert sorted({order[id(r)] for r in accepted} | {order[id(j.record)] for j in rejects}) == list(range(len(records)))
    positions = [order[id(r)] for r in accepted]
    assert positions == sorted(positions)
    for reject in rejects:
        assert isinstance(reject.reason, str) and reject.reason.strip()
        reject.reason.encode("utf-8")  # the quarantine table stores it as a UTF-8 string
    assert valid.schema == VALIDATOR.schema
    valid.validate(full=True)


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

#: Records that made the old validator raise (finding 1) or let a bad value through, with the reason expected now.
POISON = [
    pytest.param(raw_field("account_id", '"\\ud800"'), "field 'account_id'", id="lone-surrogate-in-string"),
    pytest.param(raw_field("account_id", '"ab\\udfffcd"'), "surrogate", id="lone-low-surrogate"),
    pytest.param(raw_field("event_time", '"2026-01-01T10:00:00\\ud800"'), "field 'event_time'", id="surrogate-in-timestamp"),
    pytest.param(raw_field("amount", "9" * 5000), "undecodable", id="int-over-4300-digits"),
    pytest.param(raw_field("note", "-" + "9" * 4400), "undecodable", id="int-over-4300-digits-in-unknown-field"),
    pytest.param(raw_field("amount", "9" * 400), "field 'amount'", id="int-too-big-for-double"),
    pytest.param(raw_field("mcc", "9" * 4000), "field 'mcc'", id="int-4000-digits"),
    pytest.param(b"[" * 3000 + b"]" * 3000, "nested too deeply", id="deep-array"),
    pytest.param(b'{"a":' * 2000 + b"1" + b"}" * 2000, "nested too deeply", id="deep-object"),
    pytest.param(raw_field("amount", "[" * 3000 + "]" * 3000), "nested too deeply", id="deep-field"),
    pytest.param(raw_field("amount", "[" * 500 + "]" * 500), "field 'amount': expected a number, found list", id="nested-field"),
    pytest.param(with_(event_time="0001-01-01T00:00:00+05:00"), "field 'event_time'", id="timestamp-before-year-1-utc"),
    pytest.param(with_(event_time="9999-12-31T23:59:59-05:00"), "field 'event_time'", id="timestamp-after-9999-utc"),
    pytest.param(with_(event_time="2026-01-01T10:00:00\x00"), "field 'event_time'", id="timestamp-trailing-nul"),
    pytest.param(with_(event_time="2026-02-30T10:00:00Z"), "field 'event_time'", id="timestamp-no-such-day"),
    pytest.param(with_(event_time=20260101), "field 'event_time'", id="timestamp-as-number"),
    pytest.param(raw_field("amount", "NaN"), "NaN", id="nan-literal"),
    pytest.param(raw_field("amount", "-Infinity"), "Infinity", id="infinity-literal"),
    pytest.param(raw_field("note", "NaN"), "NaN", id="nan-literal-in-unknown-field"),
    pytest.param(raw_field("amount", "1e400"), "field 'amount': inf is not a finite number", id="float-overflow-to-inf"),
    pytest.param(raw_field("mcc", "1e400"), "field 'mcc': expected an integer", id="int-field-inf"),
    pytest.param(with_()[:-1] + b', "amount": 99.0}', "duplicate key 'amount'", id="duplicate-key"),
    pytest.param(with_(amount=[12.5]), "field 'amount': expected a number, found list", id="list-for-scalar"),
    pytest.param(with_(account_id={"id": "acc-1"}), "field 'account_id': expected a string, found dict", id="object-for-string"),
    pytest.param(json.dumps(json.dumps(GOOD)).encode(), "expected a JSON object, found str", id="json-in-a-string"),
    pytest.param(json.dumps(GOOD).encode("utf-16"), "undecodable", id="utf-16"),
    pytest.param(json.dumps(GOOD).encode().replace(b"acc-1", b"acc-\xed\xa0\x80"), "undecodable", id="encoded-surrogate-bytes"),
    pytest.param(with_(mcc=True), "field 'mcc': expected an integer", id="bool-for-int"),
    pytest.param(with_(mcc=2**40), "does not fit a int", id="int-overflow"),
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
    assert valid.column("event_time")[0].as_py() == dt.datetime(2026, 1, 1, 10, 0, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize(("payload", "reason"), POISON)
def test_poison_record_is_rejected_not_raised(payload: bytes, reason: str) -> None:
    valid, accepted, rejects = VALIDATOR.validate([rec(payload)])
    assert valid.num_rows == 0 and not accepted
    assert len(rejects) == 1 and reason in rejects[0].reason, rejects[0].reason
    rejects[0].reason.encode("utf-8")


def test_poison_never_costs_a_good_record_its_place() -> None:
    """Every poison and bad record interleaved with good ones: all good ones survive, in order."""
    bad = [p.values[0] for p in POISON] + [payload for payload, _ in BAD]
    records: list[RawRecord] = []
    for i, payload in enumerate(bad):
        records.append(rec(with_(event_id=f"good-{i}"), 2 * i))
        records.append(rec(payload, 2 * i + 1))
    result = windowed().validate(records, now=NOW)
    check_accounting(records, result)
    valid, accepted, rejects = result
    assert valid.column("event_id").to_pylist() == [f"good-{i}" for i in range(len(bad))]
    assert [r.offset for r in accepted] == list(range(0, 2 * len(bad), 2))
    assert [r.record.offset for r in rejects] == list(range(1, 2 * len(bad), 2))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"account_id": "acc\x00\x00-1"}, "acc\x00\x00-1"),  # NUL is a character like any other
        ({"account_id": "\ufeffacc-1"}, "\ufeffacc-1"),  # a BOM inside a string is kept
        ({"merchant_id": "\u202emerch\u202c"}, "\u202emerch\u202c"),  # right-to-left override
        ({"merchant_id": "m-🙂-\U0010ffff"}, "m-🙂-\U0010ffff"),  # astral plane, highest code point
    ],
)
def test_odd_but_valid_unicode_is_kept_exactly(changes: dict[str, str], expected: str) -> None:
    (name,) = changes
    for payload in (with_(**changes), json.dumps({**GOOD, **changes}, ensure_ascii=False).encode()):
        valid, _, rejects = VALIDATOR.validate([rec(payload)])
        assert not rejects, rejects
        assert valid.column(name)[0].as_py() == expected


def test_leading_utf8_bom_is_tolerated_and_naive_time_is_utc() -> None:
    """RFC 8259 lets parsers ignore a leading BOM; a timestamp without offset is UTC by convention."""
    valid, _, rejects = VALIDATOR.validate([rec(b"\xef\xbb\xbf" + with_(event_time="2026-01-01T10:00:00"))])
    assert not rejects, rejects
    assert valid.column("event_time")[0].as_py() == dt.datetime(2026, 1, 1, 10, tzinfo=UTC)


def test_offsets_are_converted_to_utc() -> None:
    valid, _, rejects = VALIDATOR.validate([rec(with_(event_time="2026-01-01T10:00:00+05:30"))])
    assert not rejects, rejects
    assert valid.column("event_time")[0].as_py() == dt.datetime(2026, 1, 1, 4, 30, tzinfo=UTC)


def test_an_unforeseen_error_rejects_only_its_own_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last lines of defence: an error no check foresaw, in a check or in Arrow, costs one record only."""
    check = validation._check

    def flawed(name: str, spec: Any, value: Any) -> Any:
        if name == "amount" and value == 13.0:
            raise RuntimeError("a bug in a check")
        if name == "amount" and value == 14.0:
            return object()  # passes the checks, yet Arrow refuses it
        return check(name, spec, value)

    monkeypatch.setattr(validation, "_check", flawed)
    monkeypatch.setattr(validation, "bulk_columns", lambda *_: ([], {}))  # the row path's defences
    records = [rec(with_(event_id=f"e{i}", amount=float(i)), i) for i in range(11, 17)]
    result = VALIDATOR.validate(records)
    check_accounting(records, result)
    valid, accepted, rejects = result
    assert valid.column("event_id").to_pylist() == ["e11", "e12", "e15", "e16"]
    assert [(r.record.offset, r.reason.split(":")[0]) for r in rejects] == [(13, "could not be validated"), (14, "could not be stored")]
    assert "RuntimeError: a bug in a check" in rejects[0].reason


# --------------------------------------------------------------------------- the event-time window (finding 5)


def test_events_spec_declares_the_window_with_defaults() -> None:
    assert PIPELINE.events.max_future == 3600
    assert PIPELINE.events.max_age == 400 * 86400
    data = yaml.safe_load((ROOT / "conf/pipeline.yaml").read_text())
    data["events"].update(max_future="15m", max_age="2w")
    events = PipelineConfig.model_validate(data).events
    assert (events.max_future, events.max_age) == (900, 14 * 86400)


@pytest.mark.parametrize("value", ["soon", "0h", "-1d", True])
def test_events_window_rejects_a_bad_duration(tmp_path: Any, value: Any) -> None:
    data = yaml.safe_load((ROOT / "conf/pipeline.yaml").read_text())
    data["events"]["max_age"] = value
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="max_age"):
        load_pipeline(path)


@pytest.mark.parametrize(
    ("when", "ok"),
    [
        (NOW, True),
        (NOW + dt.timedelta(hours=1), True),
        (NOW + dt.timedelta(hours=1, microseconds=1), False),
        (NOW - dt.timedelta(days=400), True),
        (NOW - dt.timedelta(days=400, microseconds=1), False),
        (dt.datetime(2099, 1, 1, tzinfo=UTC), False),
        (dt.datetime(1970, 1, 1, tzinfo=UTC), False),
        (dt.datetime(1, 1, 1, tzinfo=UTC), False),
        (dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), False),
    ],
)
def test_event_time_window_is_relative_to_ingest_time(when: dt.datetime, ok: bool) -> None:
    valid, _, rejects = windowed().validate([rec(with_(event_time=when.isoformat()))], now=NOW)
    assert valid.num_rows == int(ok) and len(rejects) == int(not ok)
    if not ok:
        reason = rejects[0].reason
        assert "field 'event_time'" in reason and when.isoformat() in reason, reason
        assert "2024-12-28T00:00:00+00:00" in reason and "2026-02-01T01:00:00+00:00" in reason, reason
        assert "400d" in reason and "1h" in reason, reason


def test_window_defaults_to_the_current_time_and_labels_have_none() -> None:
    current = dt.datetime.now(UTC)
    fresh, stale = with_(event_time=current.isoformat()), with_(event_time="2099-01-01T00:00:00Z")
    valid, _, rejects = windowed().validate([rec(fresh), rec(stale, 1)])
    assert valid.num_rows == 1 and [r.record.offset for r in rejects] == [1]
    assert PIPELINE.labels is not None
    labels = Validator(PIPELINE.labels.fields, PIPELINE.source.max_payload_bytes)
    label = {"event_id": "e1", "account_id": "acc-1", "is_fraud": True, "reported_at": "2099-01-01T00:00:00Z"}
    valid, _, rejects = labels.validate([rec(json.dumps(label).encode())], now=NOW)
    assert valid.num_rows == 1 and not rejects


def test_window_bounds_that_leave_the_calendar_are_clamped() -> None:
    """A huge max_age or max_future does not overflow: it simply accepts everything on that side."""
    fields = PIPELINE.events.fields
    wide = Validator(fields, 16384, time_column="event_time", max_future=10**9 * 86400, max_age=10**9 * 86400)
    payloads = [with_(event_time="0001-01-01T00:00:00Z"), with_(event_time="9999-12-31T23:59:59Z")]
    valid, _, rejects = wide.validate([rec(p, i) for i, p in enumerate(payloads)], now=NOW)
    assert valid.num_rows == 2 and not rejects, rejects


def test_window_needs_a_timestamp_column() -> None:
    with pytest.raises(ValueError, match="time_column"):
        Validator(PIPELINE.events.fields, 16384, time_column="amount", max_age=60)
    with pytest.raises(ValueError, match="time_column"):
        Validator(PIPELINE.events.fields, 16384, time_column="nope", max_age=60)


# --------------------------------------------------------------------------- properties

# generated inside the accepted window at NOW
SAMPLE = [encode_row(row) for row in generate(300, start=dt.datetime(2026, 1, 1, tzinfo=UTC)).events.to_pylist()]
SAMPLE_ROWS = [json.loads(b) for b in SAMPLE]
FIELDS = list(PIPELINE.events.fields)


def _deep(n: int) -> str:
    return "[" * n + "]" * n


#: Literal JSON texts that stress the decoder or a field's type.
raw_values = st.one_of(
    st.integers(1, 5000).map(_deep),
    st.integers(1, 3000).map(lambda n: '{"a":' * n + "0" + "}" * n),
    st.integers(1, 6000).map(lambda n: "9" * n),
    st.integers(1, 6000).map(lambda n: "-1" + "0" * n),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "0", "-0", "0.5", "true", "null", '""']),
    st.sampled_from(["[1]", '{"v": 1}', '["2026-01-01T00:00:00Z"]', "[[[12.5]]]", '"12.5"', '"5411"']),
    st.text(st.characters(codec=None, categories=None), max_size=40).map(lambda s: json.dumps(s, ensure_ascii=True)),
    st.text(st.sampled_from("\x00\ufeff\u202e\u200f\u0301\ud800\udfff\U0010ffffa0-:TZ+"), max_size=40).map(json.dumps),
    st.builds(
        lambda d, minutes, naive: json.dumps(
            d.isoformat() if naive else d.replace(tzinfo=dt.timezone(dt.timedelta(minutes=minutes))).isoformat()
        ),
        st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999999)),
        st.integers(-(23 * 60 + 59), 23 * 60 + 59),
        st.booleans(),
    ),
)


@st.composite
def mutated_event(draw: st.DrawFn) -> bytes:
    """A valid sample event, changed in one of many nasty ways."""
    index = draw(st.integers(0, len(SAMPLE) - 1))
    row, payload = SAMPLE_ROWS[index], SAMPLE[index]
    how = draw(st.sampled_from(["field", "unknown-field", "duplicate", "truncate", "flip", "wrap", "drop"]))
    if how == "field":
        return raw_field(draw(st.sampled_from(FIELDS)), draw(raw_values), row)
    if how == "unknown-field":
        return raw_field("extra", draw(raw_values), row)
    if how == "duplicate":
        name = draw(st.sampled_from(FIELDS))
        return payload[:-1] + f',"{name}":'.encode() + draw(raw_values).encode("utf-8", "surrogatepass") + b"}"
    if how == "truncate":
        return payload[: draw(st.integers(0, len(payload)))]
    if how == "flip":
        data = bytearray(payload)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return bytes(data)
    if how == "wrap":
        return b"[" + payload + b"]"
    smaller = copy.copy(row)
    smaller.pop(draw(st.sampled_from(FIELDS)))
    return json.dumps(smaller).encode()


records_payloads = st.one_of(st.binary(max_size=300), mutated_event(), st.sampled_from(SAMPLE), st.none())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(payload: bytes) -> None:
    records = [rec(payload)]
    check_accounting(records, windowed().validate(records, now=NOW))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(records_payloads, max_size=12))
def test_mutated_events_never_raise_and_are_all_accounted_for(payloads: list[bytes | None]) -> None:
    records = [rec(p, i) for i, p in enumerate(payloads)]
    check_accounting(records, windowed().validate(records, now=NOW))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), mutated_event()), min_size=1, max_size=8))
def test_good_events_survive_any_poison_beside_them(pairs: list[tuple[int, bytes]]) -> None:
    records: list[RawRecord] = []
    for i, (good, poison) in enumerate(pairs):
        records += [rec(SAMPLE[good], 2 * i), rec(poison, 2 * i + 1)]
    result = windowed().validate(records, now=NOW)
    check_accounting(records, result)
    valid, accepted, _ = result
    kept = {r.offset: n for n, r in enumerate(accepted)}
    for i, (good, _) in enumerate(pairs):
        assert 2 * i in kept, f"good record {i} was lost"
        assert valid.column("event_id")[kept[2 * i]].as_py() == SAMPLE_ROWS[good]["event_id"]


# --------------------------------------------------------------------------- the bulk path (lambdaflow/bulk_validation.py)


def row_path(validator: Validator, records: list[RawRecord]) -> tuple[Any, list[RawRecord], list[Reject]]:
    with mock.patch.object(validation, "bulk_columns", lambda *_: ([], {})):
        return validator.validate(records, now=NOW)


def same_result(
    records: list[RawRecord], bulk: tuple[Any, list[RawRecord], list[Reject]], rows: tuple[Any, list[RawRecord], list[Reject]]
) -> None:
    assert bulk[0].equals(rows[0]), (bulk[0].to_pylist(), rows[0].to_pylist())
    assert [r.offset for r in bulk[1]] == [r.offset for r in rows[1]]
    assert [(j.record.offset, j.reason) for j in bulk[2]] == [(j.record.offset, j.reason) for j in rows[2]]


def test_the_bulk_path_takes_plain_events_and_leaves_the_doubtful_to_the_row_path() -> None:
    validator = windowed()
    plain = [rec(p, i) for i, p in enumerate(SAMPLE[:50])]
    indices, _ = bulk_validation.bulk_columns(validator, plain, validator._window(NOW))
    assert indices == list(range(50))  # the common case never reaches the row path
    doubtful = [
        rec(SAMPLE[0][:-1] + b',"amount":1}', 0),  # a duplicate key: orjson would keep the last copy
        rec(with_(event_id='say "hi"'), 1),  # an escape: the quote count proves nothing
        rec(with_(mcc=5411.0), 2),  # valid, but a float for an integer: the row path converts it
        rec(SAMPLE[1], 3),
    ]
    indices, _ = bulk_validation.bulk_columns(validator, doubtful, validator._window(NOW))
    assert indices == []  # the float in an integer column sends the whole batch to the row path
    valid, accepted, rejects = validator.validate(doubtful, now=NOW)
    assert [r.offset for r in accepted] == [1, 2, 3] and valid.column("mcc").to_pylist()[1] == 5411
    assert [j.record.offset for j in rejects] == [0] and "duplicate key" in rejects[0].reason


def test_a_flaw_in_the_bulk_path_costs_no_record(monkeypatch: pytest.MonkeyPatch) -> None:
    def flawed(*_: Any) -> Any:
        raise RuntimeError("a bug in the bulk path")

    monkeypatch.setitem(bulk_validation._CHECKS, "double", flawed)
    records = [rec(p, i) for i, p in enumerate(SAMPLE[:20])]
    valid, accepted, rejects = windowed().validate(records, now=NOW)
    assert valid.num_rows == 20 and not rejects


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.one_of(records_payloads, st.sampled_from(SAMPLE)), max_size=12))
def test_the_bulk_path_decides_as_the_row_path_does(payloads: list[bytes | None]) -> None:
    """Same table, same accepted records, same rejects with the same reasons: the bulk path only decides faster."""
    records = [rec(p, i) for i, p in enumerate(payloads)]
    validator = windowed()
    same_result(records, validator.validate(records, now=NOW), row_path(validator, records))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(range(len(SAMPLE))), min_size=1, max_size=6),
    st.sampled_from(FIELDS),
    st.one_of(raw_values, st.text(max_size=30).map(lambda t: json.dumps(t, ensure_ascii=False))),  # raw UTF-8: no escapes
)
def test_one_odd_value_in_a_plain_batch_is_judged_as_the_row_path_judges_it(picks: list[int], name: str, value: str) -> None:
    records = [rec(SAMPLE[i], n) for n, i in enumerate(picks)]
    records.append(rec(raw_field(name, value, SAMPLE_ROWS[picks[0]]), len(records)))
    validator = windowed()
    same_result(records, validator.validate(records, now=NOW), row_path(validator, records))
