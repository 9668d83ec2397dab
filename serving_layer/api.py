"""The REST API (`lambdaflow serve`): read-only lookups on the unified views, predictions, and scoring now.

No endpoint runs caller-supplied SQL: view and column names come from the
pipeline, values are bound as parameters. An optional bearer token from the
profile (``serving.token``) protects everything but ``/health``; without one the
API only serves on a loopback address.

Under faults it stays up and says what is wrong:

- Handlers are plain functions, run in FastAPI's thread pool, so a slow DuckDB
  query or model registry never blocks the event loop (nor ``/health``).
- Request bodies are capped at the pipeline's ``source.max_payload_bytes``
  (413), from the declared ``Content-Length`` or while streaming, never read
  whole first.
- If a newer table snapshot cannot be opened (a corrupt Delta log, storage
  down), the data endpoints keep answering from the last good one and
  ``/health`` answers 503 with the reason, until a later check succeeds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from lambdaflow.config import Settings
from lambdaflow.contracts.paths import PREDICTIONS, sql_name
from lambdaflow.errors import ConfigError
from lambdaflow.features import FeatureFunction
from lambdaflow.registry import LoadedModel
from lambdaflow.schemas import INGEST_SEQ
from lambdaflow.scoring import ChampionCache, feature_matrix, predict
from lambdaflow.validation import RawRecord, Validator
from lambdaflow.views import compile_views, quote
from serving_layer.engine import Session, open_session
from serving_layer.feature_log import FeatureLogger
from serving_layer.lookups import MAX_BATCH_KEYS, BadLookup, feature_vectors, freshness, parse_key, parse_time, probe_event
from serving_layer.online import OnlineSnapshot
from serving_layer.refresher import OnlineIndex, ProblemReport, SnapshotUnavailable, table_versions


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, ``localhost``)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # another host name: it may resolve to anything
        return False


class SessionCache:
    """One engine session, reopened when a table has a new Delta version (checked at most every ``refresh`` s).

    If a newer snapshot cannot be opened (a corrupt Delta log, storage down), the
    last good session keeps answering and :attr:`problem` says why; every
    ``refresh`` seconds it tries again. A DuckDB connection runs one query at a
    time, so every use of it, and every swap of sessions, holds :attr:`lock`.
    """

    def __init__(self, settings: Settings, refresh: float) -> None:
        self.settings = settings
        self.refresh = refresh
        self.lock = threading.Lock()
        self.report = ProblemReport()
        self._session: Session | None = None
        self._checked = float("-inf")

    def query(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        """Run one statement with bound parameters.

        Raises:
            SnapshotUnavailable: no snapshot could be opened so far.
        """
        return self.queries([(sql, params or [])])[0]

    def queries(self, statements: Sequence[tuple[str, list[Any]]]) -> list[pa.Table]:
        """Run statements on one and the same snapshot (so their answers agree with each other).

        Raises:
            SnapshotUnavailable: no snapshot could be opened so far.
        """
        with self.lock:
            connection = self._current().connection
            return [connection.sql(sql, params=params).to_arrow_table() for sql, params in statements]

    @property
    def problem(self) -> str | None:
        """Why the newest snapshot is not being served, or None when it is."""
        return self.report.problem

    def status(self) -> tuple[dict[str, int], str | None]:
        """The table versions being served, and why they are not the newest (None when they are); looks for new versions first."""
        with self.lock:
            try:
                session = self._current()
            except SnapshotUnavailable:
                return {}, self.problem
            session.connection.execute("SELECT 1").fetchall()
            return dict(session.versions), self.problem

    def _current(self) -> Session:
        now = time.monotonic()
        if now - self._checked >= self.refresh:
            self._checked = now
            try:
                if self._session is None or self._stale(self._session):
                    fresh = open_session(self.settings)
                    old, self._session = self._session, fresh
                    if old is not None:
                        old.connection.close()  # nobody else holds it: every use is under the lock
                self.report.ok()
            except Exception as exc:  # noqa: BLE001 - keep serving the last good snapshot; /health reports why
                self.report.failed(exc, self._session is not None)
        if self._session is None:
            raise SnapshotUnavailable(self.problem or "no table snapshot opened yet")
        return self._session

    def _stale(self, session: Session) -> bool:
        try:
            current = table_versions(self.settings)
        except Exception:  # noqa: BLE001 - a table that cannot be read: reopening says which and why
            return True
        return current != session.versions


def create_app(settings: Settings, host: str | None = None, server: bool = False) -> FastAPI:
    """The FastAPI application for a pipeline and profile.

    Args:
        host: the address it will be served on (default: the profile's ``serving.host``).
        server: the process exists to serve it (``lambdaflow serve``): the index may tune the process (gc).

    Raises:
        ConfigError: the address is not a loopback address and ``serving.token`` is not set.
    """
    serving = settings.profile.serving
    token = serving.token or None
    bind = host or serving.host
    if token is None and not is_loopback(bind):
        raise ConfigError(
            f"{settings.profile_path}: serving.token is not set, so the API may only serve on a loopback address, "
            f"not {bind!r}: set serving.token (e.g. token: ${{LAMBDAFLOW_API_TOKEN}}) or bind 127.0.0.1"
        )
    pipeline = settings.pipeline
    views = compile_views(pipeline)
    ev = pipeline.events
    features = FeatureFunction(pipeline)
    validator = Validator.for_events(ev, pipeline.source.max_payload_bytes)
    max_body = pipeline.source.max_payload_bytes
    sessions = SessionCache(settings, serving.refresh_seconds)
    models = ChampionCache(settings)
    model_lock = threading.Lock()  # one look at the registry at a time
    metrics = CollectorRegistry()
    refresh_seconds = Histogram(
        "lambdaflow_online_refresh_seconds", "Online index refreshes", ["kind"], registry=metrics, buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30)
    )
    online = OnlineIndex(settings, serving.refresh_seconds, lambda kind, s: refresh_seconds.labels(kind).observe(s), freeze=server)
    served = FeatureLogger(settings)
    requests = Counter("lambdaflow_api_requests", "API requests", ["endpoint", "status"], registry=metrics)
    latency = Histogram(
        "lambdaflow_api_seconds", "API latency", ["endpoint"], registry=metrics, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
    )
    expected = token.encode() if token is not None else None  # compared as UTF-8 bytes, as clients send it
    bearer = HTTPBearer(auto_error=False)

    async def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if expected is None:
            return
        if credentials is None or not secrets.compare_digest(_header_bytes(credentials.credentials), expected):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    async def bounded_body(request: Request) -> bytes:
        """The request body, refused with 413 as soon as it is known to pass ``max_body``: declared or while it streams in."""
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise HTTPException(400, f"Content-Length is not a number: {declared!r}")
            if int(declared) > max_body:
                raise HTTPException(413, f"request body of {int(declared)} bytes is larger than max_payload_bytes {max_body}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise HTTPException(413, f"request body is larger than max_payload_bytes {max_body} (stopped reading at {size} bytes)")
            chunks.append(chunk)
        return b"".join(chunks)

    def champion() -> LoadedModel | None:
        """The model to score with; the registry is asked by one request at a time, the others use the model in use meanwhile."""
        if model_lock.acquire(blocking=models.model is None):
            try:
                return models.refresh()
            finally:
                model_lock.release()
        return models.model

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield
        served.flush()  # what the sample kept since the last flush

    app = FastAPI(
        title="Lambdaflow serving API",
        version="0.1.0",
        description="Unified (batch + speed) views, feature vectors, predictions and on-demand scoring. No caller-supplied SQL; "
        "the only write is a sample of served vectors to serving/feature_log (serving.feature_log_sample: 0 turns it off).",
        lifespan=lifespan,
    )
    app.state.feature_log = served

    @app.exception_handler(SnapshotUnavailable)
    async def unavailable(request: Request, exc: SnapshotUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Response:
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        latency.labels(endpoint).observe(time.perf_counter() - t0)
        requests.labels(endpoint, str(response.status_code)).inc()
        return response

    @app.get("/health", responses={503: {"description": "The newest table snapshots cannot be opened: `reason` says why."}})
    def health() -> JSONResponse:
        """Liveness and the table versions the API reads; 503 with the reason while it cannot open the newest ones."""
        versions, problem = sessions.status()
        with contextlib.suppress(SnapshotUnavailable):
            online.current()  # the first look builds the index; its problem, if any, is reported below
        problem = online.problem or problem
        if problem is None:
            return JSONResponse({"status": "ok", "tables": versions})
        return JSONResponse({"status": "unhealthy", "reason": problem, "tables": versions}, status_code=503)

    @app.get("/metrics", dependencies=[Depends(authorised)])
    def prometheus() -> Response:
        """Request counts and latencies in Prometheus text format."""
        return Response(generate_latest(metrics), media_type="text/plain; version=0.0.4")

    def view_answer(snapshot: OnlineSnapshot, view: str, values: dict[str, str]) -> dict[str, Any]:
        index = snapshot.views.get(view)
        if index is None:
            raise HTTPException(404, f"unknown view {view!r}; views: {sorted(views)}")
        try:
            key = parse_key(index.view, values)
        except BadLookup as exc:
            raise HTTPException(400, str(exc)) from None
        rows = index.rows(key)
        if rows.num_rows == 0:
            raise HTTPException(404, f"no rows for {values} in {view}")
        return {
            "view": view,
            "key": dict(zip(index.view.spec.keys, key)),
            "batch_watermark": snapshot.watermarks[view],
            "freshest_ingest_seq": snapshot.freshest[view],
            "rows": _jsonable(rows.to_pylist()),
        }

    async def snapshot_now() -> OnlineSnapshot:
        """The online snapshot, without a worker thread once built (a lookup is microseconds; the first build is not)."""
        if online.snapshot is None:
            return await run_in_threadpool(online.current)
        return online.current()

    @app.get("/views/{view}/{key}", dependencies=[Depends(authorised)])
    async def view_rows(view: str, key: str) -> dict[str, Any]:
        """Unified values of a view for one key (all its buckets), with the batch watermark and the freshest speed batch."""
        compiled = views.get(view)
        if compiled is not None and len(compiled.spec.keys) != 1:
            raise HTTPException(
                400, f"view {view!r} has a composite key {compiled.spec.keys}: use /views/{view}?{'=…&'.join(compiled.spec.keys)}=…"
            )
        return view_answer(await snapshot_now(), view, {compiled.spec.keys[0]: key} if compiled else {})

    @app.get("/views/{view}", dependencies=[Depends(authorised)])
    async def view_rows_by_columns(view: str, request: Request) -> dict[str, Any]:
        """Unified values of a view for the key given as query parameters, one per key column (composite keys too)."""
        return view_answer(await snapshot_now(), view, dict(request.query_params))

    @app.get("/features/{key}", dependencies=[Depends(authorised)])
    def entity_features(key: str, request: Request) -> dict[str, Any]:
        """The feature vector of an event of entity ``key`` now (or at ``?at=``), fields given as query parameters.

        Fields not given are missing (NaN in event features). View features come from the speed layer's feature
        function over the entity's unified state: every event of the key so far, windows ending at ``at``.
        """
        params = dict(request.query_params)
        try:
            at = parse_time(params.pop("at", None))
            event = probe_event(pipeline, key, params, at)
        except BadLookup as exc:
            raise HTTPException(422, str(exc)) from None
        snapshot = online.current()
        table = feature_vectors(snapshot, features, event)
        served.record("features", event, table, snapshot.as_of_seq)
        vector = table.to_pylist()[0]
        return {"key": {ev.partition_key: key}, "at": at.isoformat(), "features": _jsonable(vector), **freshness(snapshot)}

    @app.post("/features", dependencies=[Depends(authorised)])
    def many_features(body: dict[str, Any]) -> dict[str, Any]:
        """Feature vectors for many entities in one call: ``{"keys": [...], "at": optional ISO time}``."""
        keys = body.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, (str, int)) for k in keys) or len(keys) > MAX_BATCH_KEYS:
            raise HTTPException(422, f'"keys" must be a list of at most {MAX_BATCH_KEYS} strings or integers')
        unique = list(dict.fromkeys(str(k) for k in keys))
        try:
            at = parse_time(body.get("at"))
            events = pa.concat_tables([probe_event(pipeline, k, {}, at) for k in unique]) if unique else None
        except BadLookup as exc:
            raise HTTPException(422, str(exc)) from None
        snapshot = online.current()
        vectors = []
        if events is not None:
            table = feature_vectors(snapshot, features, events)
            served.record("features", events, table, snapshot.as_of_seq)
            vectors = table.to_pylist()
        return {"at": at.isoformat(), "features": _jsonable(dict(zip(unique, vectors))), **freshness(snapshot)}

    @app.get("/predictions/{event_id}", dependencies=[Depends(authorised)])
    def prediction(event_id: str) -> dict[str, Any]:
        """The speed layer's prediction for an event."""
        rows = sessions.query(
            f"SELECT * FROM {quote(sql_name(PREDICTIONS))} WHERE {quote(ev.id_column)} = ? ORDER BY {quote(INGEST_SEQ)} LIMIT 1", [event_id]
        )
        if rows.num_rows == 0:
            raise HTTPException(404, f"no prediction for event {event_id!r}")
        row = rows.to_pylist()[0]
        row["features"] = dict(zip(features.names, row["features"] or []))
        return _jsonable(row)

    @app.post(
        "/score",
        dependencies=[Depends(authorised)],
        responses={413: {"description": f"The body is larger than max_payload_bytes ({max_body})."}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": f"One event as JSON, at most {max_body} bytes.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    def score(body: bytes = Depends(bounded_body)) -> dict[str, Any]:
        """Score one event now with the champion, using the same feature function and the key's current state."""
        valid, _, rejects = validator.validate([RawRecord("api", 0, 0, None, body)])
        if rejects:
            raise HTTPException(422, rejects[0].reason)
        model = champion()
        if model is None:
            raise HTTPException(503, "no champion model has been promoted yet")
        snapshot = online.current()
        vector = feature_vectors(snapshot, features, valid)
        served.record("score", valid, vector, snapshot.as_of_seq)
        value = float(predict(model.booster, feature_matrix(vector, model.features))[0])
        threshold = pipeline.model.alert_threshold if pipeline.model else 0.5
        return {
            "event_id": valid.column(ev.id_column)[0].as_py(),
            "model_version": model.version,
            "score": value,
            "decision": value >= threshold,
            "features": dict(zip(features.names, vector.to_pylist()[0].values())),
        }

    return app


def _header_bytes(value: str) -> bytes:
    """A header value as the bytes the client sent (ASGI servers decode headers as Latin-1)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:  # not from a wire header: compare its UTF-8 form
        return value.encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    return value
