"""The REST API over real tables: lookups, predictions, scoring now, auth, and no SQL from callers.

Also the API under faults and hostile clients: odd tokens, oversized or endless
bodies, a slow model registry, a corrupt Delta log, a public bind without a token.
"""

from __future__ import annotations

import contextlib
import json
import select
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from batch_layer.views import recompute_views
from lambdaflow import producer, registry
from lambdaflow.config import LocalStorage, ServingConfig, Settings
from lambdaflow.errors import ConfigError
from lambdaflow.features import FeatureFunction
from lambdaflow.sample_data import generate
from lambdaflow.scoring import ChampionCache
from serving_layer.api import create_app
from serving_layer.engine import open_session
from serving_layer.lookups import query_fields
from tests.conftest import SpeedEnv, make_env
from tests.serving_layer.test_serving import shifted
from tests.speed_layer.test_speed_layer import drain, send


def promote_a_model(env: SpeedEnv, tmp_path) -> int:
    import xgboost as xgb

    names = FeatureFunction(env.settings.pipeline).names
    rng = np.random.default_rng(1)
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(rng.normal(size=(300, len(names))), rng.integers(0, 2, 300)), 5)
    path = tmp_path / registry.BOOSTER_FILE
    booster.save_model(str(path))
    c = registry.client(env.settings)
    version = registry.register(env.settings, c.create_run(registry.experiment_id(env.settings)).info.run_id, path, names, 0, {})
    registry.promote(env.settings, version)
    return version


@pytest.fixture(scope="module")
def served(kafka, spark, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("api")
    speed_env = make_env(tmp_path, kafka)
    sample = generate(3000, days=3, seed=41).events
    send(speed_env, sample.slice(0, 2000))
    drain(speed_env, idle=3)
    recompute_views(speed_env.settings, spark)
    send(speed_env, sample.slice(2000))
    drain(speed_env, idle=3)
    version = promote_a_model(speed_env, tmp_path)
    return speed_env, sample, version


def test_lookups_predictions_and_scoring(served) -> None:
    env, sample, version = served
    client = TestClient(create_app(env.settings))
    assert client.get("/health").json()["status"] == "ok"
    account = sample["account_id"][0].as_py()
    body = client.get(f"/views/account_profile/{account}").json()
    want = open_session(env.settings).query(f"SELECT * FROM unified_account_profile WHERE account_id = '{account}'").to_pylist()[0]
    assert body["rows"][0]["txn_count"] == want["txn_count"]
    assert body["batch_watermark"] >= 1 and body["freshest_ingest_seq"] > body["batch_watermark"]
    hourly = client.get(f"/views/account_hourly/{account}").json()["rows"]
    assert sum(r["txn_count"] for r in hourly) == want["txn_count"]
    event_id = sample["event_id"][5].as_py()
    prediction = client.get(f"/predictions/{event_id}").json()
    assert prediction["event_id"] == event_id and set(prediction["features"]) == set(FeatureFunction(env.settings.pipeline).names)
    fresh = shifted(sample.slice(0, 1), 24, "api-").to_pylist()[0]
    scored = client.post("/score", content=producer.encode_row(fresh))
    assert scored.status_code == 200, scored.text
    result = scored.json()
    assert result["model_version"] == version and 0 <= result["score"] <= 1
    assert result["features"]["lifetime_count"] == want["txn_count"]  # the key's whole history is its state
    assert "lambdaflow_api_requests_total" in client.get("/metrics").text


def test_bad_input_is_refused_clearly(served) -> None:
    env, sample, _ = served
    client = TestClient(create_app(env.settings))
    assert client.get("/views/nope/x").status_code == 404
    injection = client.get("/views/account_profile/x' OR '1'='1")
    assert injection.status_code == 404  # bound as a value: matches nothing
    bad = client.post("/score", content=json.dumps({"event_id": "x"}))
    assert bad.status_code == 422 and "missing field(s)" in bad.json()["detail"]
    assert client.post("/score", content=b"\xff").status_code == 422
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/views/{view}/{key}",
        "/views/{view}",
        "/features/{key}",
        "/features",
        "/predictions/{event_id}",
        "/score",
        "/health",
        "/metrics",
    } <= set(paths)


def _nan_free(vector: dict[str, object]) -> dict[str, object]:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in vector.items()}


def test_features_are_what_the_speed_layer_computes_from_the_sql_state(served) -> None:
    """/features: the feature function over the unified state; equal to /score's vector and to the SQL view's state."""
    from lambdaflow.views import compile_views
    from serving_layer.lookups import probe_event
    from serving_layer.sql import partial_rows_sql

    env, sample, _ = served
    pipeline = env.settings.pipeline
    client = TestClient(create_app(env.settings))
    account = sample["account_id"][0].as_py()
    other = next(a for a in sample["account_id"].to_pylist() if a != account)
    fresh = shifted(sample.slice(0, 1), 24, "feat-").to_pylist()[0]
    scored = client.post("/score", content=producer.encode_row(fresh)).json()
    fields = {
        k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fresh.items() if k not in ("event_id", "account_id", "event_time")
    }
    at = fresh["event_time"].isoformat()
    got = client.get(f"/features/{account}", params={**fields, "at": at})
    assert got.status_code == 200, got.text
    assert got.json()["features"] == scored["features"]
    # the same vector from the SQL view's state (the path /score took before the index)
    session = open_session(env.settings)
    views = compile_views(pipeline)
    entity = {**fresh, "account_id": account}
    prior = {}
    for name in {f.view for f in pipeline.features if getattr(f, "view", None)}:
        (key,) = views[name].spec.keys  # the account's views, and the merchant's
        rows = session.query(f"SELECT * FROM ({partial_rows_sql(views[name])}) AS p WHERE {key} = '{entity[key]}'")
        prior[name] = views[name].merge_arrow([rows])
    probe = probe_event(pipeline, account, fields, fresh["event_time"])
    want = FeatureFunction(pipeline).compute(probe, prior).to_pylist()[0]
    assert got.json()["features"] == _nan_free(want)
    # many keys in one call: each as its own lookup, duplicates once
    many = client.post("/features", json={"keys": [account, other, account], "at": at}).json()["features"]
    assert list(many) == [account, other]
    assert many[account] == client.get(f"/features/{account}", params={"at": at}).json()["features"]
    # keys by query parameters (how a composite key is given) answer what the path form does
    assert (
        client.get("/views/account_profile", params={"account_id": account}).json()
        == client.get(f"/views/account_profile/{account}").json()
    )
    assert client.get("/views/account_profile", params={"merchant_id": "m"}).status_code == 400
    assert client.get(f"/features/{account}", params={"amount": "lots"}).status_code == 422
    assert client.get(f"/features/{account}", params={"nope": "1"}).status_code == 422
    assert client.get(f"/features/{account}", params={"at": "yesterday"}).status_code == 422
    assert client.post("/features", json={"keys": "x"}).status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        b'{"event_id": "p-\\ud800"}',  # a lone surrogate
        b'{"event_id": "p-h", "mcc": ' + b"9" * 5000 + b"}",  # more digits than Python converts
        b"[" * 3000 + b"]" * 3000,  # deeper than the recursion limit
        b'{"event_id": "p-y", "event_time": "0001-01-01T00:00:00+05:00"}',  # leaves the calendar in UTC
    ],
    ids=["surrogate", "huge-integer", "deep-nesting", "year-1"],
)
def test_poison_bodies_get_422_with_a_reason(served, body: bytes) -> None:
    """Regression: /score answered 500 to the bodies that stopped the speed layer."""
    env, _, _ = served
    response = TestClient(create_app(env.settings)).post("/score", content=body)
    assert response.status_code == 422 and response.json()["detail"], response.text


def test_bearer_token(served) -> None:
    env, sample, _ = served
    profile = env.settings.profile.model_copy(update={"serving": ServingConfig(token="s3cret")})
    client = TestClient(create_app(env.settings.model_copy(update={"profile": profile})))
    account = sample["account_id"][0].as_py()
    assert client.get("/health").status_code == 200
    assert client.get(f"/views/account_profile/{account}").status_code == 401
    assert client.get(f"/views/account_profile/{account}", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get(f"/views/account_profile/{account}", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def with_serving(settings: Settings, **serving: object) -> Settings:
    profile = settings.profile.model_copy(update={"serving": settings.profile.serving.model_copy(update=serving)})
    return settings.model_copy(update={"profile": profile})


@contextlib.contextmanager
def running(app: FastAPI) -> Iterator[tuple[str, int]]:
    """The app behind a real HTTP server (uvicorn) on a free loopback port: yields (host, port)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.02)
    try:
        yield "127.0.0.1", server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def raw_exchange(address: tuple[str, int], head: bytes, chunks: Iterator[bytes], timeout: float = 10) -> bytes:
    """Send a request head, then body chunks until the server answers (or stops reading); return the answer's head."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(head)
        for chunk in chunks:
            readable, writable, _ = select.select([sock], [sock], [], timeout)
            if readable or not writable:
                break  # the server answered, or stopped reading
            try:
                sock.sendall(chunk)
            except OSError:  # reset, broken pipe or timeout: the server stopped listening
                break
        answer = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in answer and (more := sock.recv(65536)):
                answer += more
        return answer


def test_non_ascii_bearer_tokens_are_refused_not_an_error(served) -> None:
    env, sample, _ = served
    account = sample["account_id"][0].as_py()
    url = f"/views/account_profile/{account}"
    client = TestClient(create_app(with_serving(env.settings, token="s3cret")), raise_server_exceptions=False)
    for sent in ("Bearer é".encode(), "Bearer s3cretü".encode(), b"Bearer \xff\xfe"):
        answer = client.get(url, headers={"Authorization": sent})
        assert answer.status_code == 401, (sent, answer.status_code, answer.text)
        assert answer.json()["detail"] == "missing or wrong bearer token"
    # a non-ASCII token in the profile works for a client that sends it as UTF-8
    client = TestClient(create_app(with_serving(env.settings, token="pässwört")), raise_server_exceptions=False)
    assert client.get(url, headers={"Authorization": "Bearer pässwört".encode()}).status_code == 200
    assert client.get(url, headers={"Authorization": "Bearer passwort"}).status_code == 401


def test_request_bodies_are_limited_without_reading_them_whole(served) -> None:
    env, sample, _ = served
    limit = env.settings.pipeline.source.max_payload_bytes
    fresh = producer.encode_row(shifted(sample.slice(0, 1), 24, "big-").to_pylist()[0])
    with running(create_app(env.settings)) as address, httpx.Client(base_url=f"http://{address[0]}:{address[1]}", timeout=30) as client:
        assert client.post("/score", content=fresh).status_code == 200  # a normal event is scored
        over = client.post("/score", content=fresh + b" " * (limit + 1 - len(fresh)))
        assert over.status_code == 413, over.text
        assert f"max_payload_bytes {limit}" in over.json()["detail"]
        streamed = client.post("/score", content=iter([b" " * 4096] * (limit // 4096 + 2)))  # chunked: no Content-Length
        assert streamed.status_code == 413, streamed.text
        # a huge declared body is refused from its head alone: the server does not wait for it
        head = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n"
        assert raw_exchange(address, head, iter([b"{"])).startswith(b"HTTP/1.1 413"), "declared 1 TB body not refused"
        # an endless chunked body is cut off once it passes the limit, not read to its end
        head = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        endless = (b"1000\r\n" + b" " * 4096 + b"\r\n" for _ in range(100_000))  # 400 MB unless the server stops reading
        t0 = time.monotonic()
        assert raw_exchange(address, head, endless).startswith(b"HTTP/1.1 413"), "endless body not refused"
        assert time.monotonic() - t0 < 10
        assert client.get("/health").status_code == 200  # and the server is still fine


def test_a_slow_model_registry_does_not_stall_other_requests(served, monkeypatch: pytest.MonkeyPatch) -> None:
    env, sample, _ = served
    in_registry = threading.Event()
    real_refresh = ChampionCache.refresh

    def slow_refresh(self: ChampionCache, force: bool = False):  # the registry answers after 4 s
        in_registry.set()
        time.sleep(4)
        return real_refresh(self, force)

    monkeypatch.setattr(ChampionCache, "refresh", slow_refresh)
    account = sample["account_id"][0].as_py()
    fresh = producer.encode_row(shifted(sample.slice(1, 1), 24, "slow-").to_pylist()[0])
    with running(create_app(env.settings)) as (host, port), httpx.Client(base_url=f"http://{host}:{port}", timeout=30) as client:
        assert client.get("/health").status_code == 200
        scored: list[httpx.Response] = []
        scorer = threading.Thread(target=lambda: scored.append(client.post("/score", content=fresh)))
        scorer.start()
        assert in_registry.wait(10)
        t0 = time.monotonic()
        health = client.get("/health")
        lookup = client.get(f"/views/account_profile/{account}")
        waited = time.monotonic() - t0
        scorer.join(30)
    assert health.status_code == 200 and lookup.status_code == 200
    assert waited < 2, f"other requests waited {waited:.1f} s for a /score blocked on the registry"
    assert scored and scored[0].status_code == 200, scored


def test_a_corrupt_delta_log_keeps_serving_the_last_good_snapshot(served, tmp_path: Path) -> None:
    env, sample, _ = served
    root = tmp_path / "root"  # a copy of the served tables, so the corruption stays in this test
    shutil.copytree(env.settings.profile.storage.root, root)
    profile = env.settings.profile.model_copy(
        update={
            "storage": LocalStorage(kind="local", root=str(root)),
            "serving": env.settings.profile.serving.model_copy(update={"refresh_seconds": 0.05}),
        }
    )
    settings = env.settings.model_copy(update={"profile": profile})
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    account = sample["account_id"][0].as_py()
    event_id = sample["event_id"][5].as_py()
    assert client.get("/health").status_code == 200
    good_view = client.get(f"/views/account_profile/{account}")
    good_prediction = client.get(f"/predictions/{event_id}")
    assert good_view.status_code == 200 and good_prediction.status_code == 200

    newest = sorted((root / "master/events/_delta_log").glob("*.json"))[-1]
    original = newest.read_bytes()
    newest.write_bytes(original.rstrip(b"\n")[:-1])  # a torn write of the newest commit: the table cannot be reopened
    time.sleep(0.2)
    health = client.get("/health")
    assert health.status_code == 503, health.text
    assert health.json()["status"] == "unhealthy" and "master/events" in health.json()["reason"]
    view = client.get(f"/views/account_profile/{account}")
    assert view.status_code == 200 and view.json() == good_view.json()  # served from the last good snapshot
    prediction = client.get(f"/predictions/{event_id}")
    assert prediction.status_code == 200 and prediction.json() == good_prediction.json()

    # an API started while the log is corrupt has no good snapshot: it says so instead of failing with 500
    fresh = TestClient(create_app(settings), raise_server_exceptions=False)
    assert fresh.get("/health").status_code == 503
    refused = fresh.get(f"/views/account_profile/{account}")
    assert refused.status_code == 503 and "master/events" in refused.json()["detail"]

    newest.write_bytes(original)  # repaired: both recover by themselves
    time.sleep(0.2)
    for c in (client, fresh):
        assert c.get("/health").status_code == 200
        assert c.get(f"/views/account_profile/{account}").json() == good_view.json()


def test_features_served_before_an_event_equal_its_speed_and_training_features(served, spark) -> None:
    """Parity for every feature, those of the merchant view included (a key spread over partitions).

    For fresh events of distinct accounts and merchants: ``/features`` asked before they arrive, the vector the
    speed layer scored them with, and the training set's (Spark, from master) are one and the same.
    """
    from batch_layer.training import featurize
    from lambdaflow.contracts.speed import SpeedTables

    env, sample, _ = served
    names = FeatureFunction(env.settings.pipeline).names
    client = TestClient(create_app(env.settings))
    latest = sample.slice(sample.num_rows - 400)
    picked, accounts, merchants = [], set(), set()
    for i, row in enumerate(latest.to_pylist()):
        if row["account_id"] not in accounts and row["merchant_id"] not in merchants:
            picked.append(i)
            accounts.add(row["account_id"])
            merchants.add(row["merchant_id"])
        if len(picked) == 6:
            break
    fresh = shifted(latest.take(picked), 0.5, "pit-")
    served_vectors = {}
    for row in fresh.to_pylist():
        got = client.get(f"/features/{row['account_id']}", params=query_fields(env.settings.pipeline, row))
        assert got.status_code == 200, got.text
        served_vectors[row["event_id"]] = got.json()["features"]
    assert any(v["merchant_txn_count_1d"] for v in served_vectors.values())  # the merchants have history to get right

    send(env, fresh)
    drain(env, idle=3)
    tables = SpeedTables(env.settings)
    predictions = tables.predictions.snapshot().to_arrow().to_pylist()
    speed = {r["event_id"]: dict(zip(names, r["features"])) for r in predictions if r["event_id"] in served_vectors}
    batch = featurize(env.settings, tables.master.snapshot().to_spark(spark)).toPandas().set_index("event_id")
    for event_id, vector in served_vectors.items():
        want = np.array([np.nan if vector[n] is None else vector[n] for n in names], np.float64)
        # sums may add in another order (prior state vs one pass): equal to 1e-9 relative
        assert np.allclose([speed[event_id][n] for n in names], want, rtol=1e-9, equal_nan=True), event_id
        assert np.allclose(batch.loc[event_id, names].to_numpy(np.float64), want, rtol=1e-9, equal_nan=True), event_id


def test_create_app_refuses_a_public_address_without_a_token(settings) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10", "api.example.com"):
        with pytest.raises(ConfigError, match=r"serving\.token"):
            create_app(with_serving(settings, host=host, token=None))
        create_app(with_serving(settings, host=host, token="s3cret"))  # with a token it may
    for host in ("127.0.0.1", "localhost", "::1"):
        create_app(with_serving(settings, host=host, token=None))  # loopback needs none
