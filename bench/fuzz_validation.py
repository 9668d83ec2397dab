"""Coverage-guided fuzzing of event validation (``lambdaflow.validation``) with atheris.

    pip install atheris        # not a project dependency
    python bench/fuzz_validation.py -atheris_runs=200000 [-max_len=20000] [corpus_dir ...]

Each input is one record's bytes, validated between two good sample events with the
pipeline's event-time window. A crash is any of: an exception escaping ``validate``,
a record neither valid nor rejected, a reject without a storable reason, a good
neighbour lost or moved, or an accepted row that does not survive being encoded
again (``producer.encode_row``) and validated a second time unchanged.

Without a corpus directory the run starts from sample events and a few nasty seeds
in a temporary directory; libFuzzer's own flags (``-max_total_time=120``, ``-jobs``)
pass through.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["lambdaflow.validation"]):
    import lambdaflow.validation as validation

from lambdaflow.config import load_pipeline
from lambdaflow.producer import encode_row
from lambdaflow.sample_data import generate

#: Tokens libFuzzer splices into inputs (the JSON scanner and fromisoformat are C, so coverage cannot lead it there).
TOKENS = [
    '"\\ud800"',
    '"\\udfff"',
    '"\\u0000"',
    '"\\ufeff"',
    '"\\u202e"',
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-0",
    "9" * 30,
    "[[[[",
    '{"a":{',
    "+05:00",
    "-05:00",
    "+23:59",
    "Z",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59",
    "2099-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
    ".999999",
    "T",
    "\\u",
    '\\"',
    "true",
    "null",
    '"event_time"',
    '"amount"',
    '"mcc"',
    '"account_id"',
    '"currency"',
    '"card_present"',
]

PIPELINE = load_pipeline(ROOT / "conf" / "pipeline.yaml")
VALIDATOR = validation.Validator.for_events(PIPELINE.events, PIPELINE.source.max_payload_bytes)
NOW = dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc)
SAMPLE = [encode_row(row) for row in generate(50).events.to_pylist()]
GOOD_BEFORE = validation.RawRecord("transactions", 0, 0, b"k", SAMPLE[0])
GOOD_AFTER = validation.RawRecord("transactions", 0, 2, b"k", SAMPLE[1])


def seeds() -> list[bytes]:
    """Starting points: sample events and records that once crashed validation."""
    first = json.loads(SAMPLE[2])

    def field(name: str, raw: str) -> bytes:
        return json.dumps({**first, name: "\x01"}).replace('"\\u0001"', raw).encode()

    return [
        *SAMPLE[2:12],
        field("account_id", '"\\ud800"'),
        field("amount", "9" * 400),
        field("event_time", '"0001-01-01T00:00:00+05:00"'),
        field("event_time", '"9999-12-31T23:59:59-05:00"'),
        field("amount", "NaN"),
        field("amount", "[" * 50 + "]" * 50),
        SAMPLE[2][:-1] + b',"amount":1}',
    ]


def check(payload: bytes) -> None:
    """Validate one fuzzed record between two good ones and check every promise of the validator."""
    fuzzed = validation.RawRecord("transactions", 0, 1, b"k", payload)
    valid, accepted, rejects = VALIDATOR.validate([GOOD_BEFORE, fuzzed, GOOD_AFTER], now=NOW)
    if valid.num_rows != len(accepted) or valid.num_rows + len(rejects) != 3:
        raise AssertionError(f"records lost or duplicated: {valid.num_rows} valid, {len(rejects)} rejected of 3")
    if accepted[0] is not GOOD_BEFORE or accepted[-1] is not GOOD_AFTER:
        raise AssertionError(f"a good neighbour was lost or moved: {[r.offset for r in accepted]}")
    for reject in rejects:
        if reject.record is not fuzzed or not reject.reason.strip():
            raise AssertionError(f"bad reject {reject!r}")
        reject.reason.encode("utf-8")
    valid.validate(full=True)
    if len(accepted) == 3:
        row = valid.slice(1, 1).to_pylist()[0]
        again, _, rejected = VALIDATOR.validate([validation.RawRecord("t", 0, 0, None, encode_row(row))], now=NOW)
        if rejected or again.to_pylist()[0] != row:
            raise AssertionError(f"accepted row does not round-trip: {row!r} -> {rejected or again.to_pylist()}")


def main() -> None:
    argv = list(sys.argv)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="fuzz-validation-"))
        for i, seed in enumerate(seeds()):
            (corpus / f"seed-{i:02d}").write_bytes(seed)
        argv.append(str(corpus))
        (corpus.parent / f"{corpus.name}.dict").write_text("".join(f"{json.dumps(token)}\n" for token in TOKENS))
        argv.append(f"-dict={corpus.parent / f'{corpus.name}.dict'}")
    if not any(arg.startswith("-max_len=") for arg in argv):
        argv.append(f"-max_len={PIPELINE.source.max_payload_bytes + 16}")
    atheris.Setup(argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
