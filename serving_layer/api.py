"""The REST API (`lambdaflow serve`): read-only lookups on the unified views, predictions, and scoring now.

No endpoint runs caller-supplied SQL: view and column names come from the
pipeline, values are bound as parameters. An optional bearer token from the
profile (``serving.token``) protects everything but ``/health``.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
from typing import Any

import pyarrow as pa
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from lambdaflow.config import Settings, ViewFeature
from lambdaflow.contracts.paths import PREDICTIONS, existing_tables, sql_name
from lambdaflow.features import FeatureFunction
from lambdaflow.schemas import INGEST_SEQ
from lambdaflow.scoring import ChampionCache, feature_matrix, predict
from lambdaflow.sql import to_duckdb
from lambdaflow.tables import Table
from lambdaflow.validation import RawRecord, Validator
from lambdaflow.views import compile_views, quote
from serving_layer.engine import Session, open_session
from serving_layer.sql import FRESHNESS_VIEW, partial_rows_sql, unified_name


class SessionCache:
    """One engine session, reopened when a table has a new Delta version (checked at most every ``refresh`` s)."""

    def __init__(self, settings: Settings, refresh: float) -> None:
        self.settings = settings
        self.refresh = refresh
        self.lock = threading.Lock()  # a DuckDB connection runs one query at a time
        self._session: Session | None = None
        self._checked = 0.0

    def query(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        with self.lock:
            session = self._current()
            return session.connection.execute(sql, params or []).to_arrow_table()

    def _current(self) -> Session:
        now = time.monotonic()
        if self._session is None or now - self._checked > self.refresh:
            self._checked = now
            if self._session is None or self._stale(self._session):
                self._session = open_session(self.settings)
        return self._session

    def _stale(self, session: Session) -> bool:
        current = {name: Table(uri).version() for name, uri in existing_tables(self.settings.profile)}
        return current != session.versions


def create_app(settings: Settings) -> FastAPI:
    """The FastAPI application for a pipeline and profile."""
    pipeline = settings.pipeline
    views = compile_views(pipeline)
    ev = pipeline.events
    features = FeatureFunction(pipeline)
    validator = Validator(ev.fields, pipeline.source.max_payload_bytes)
    sessions = SessionCache(settings, settings.profile.serving.refresh_seconds)
    models = ChampionCache(settings)
    metrics = CollectorRegistry()
    requests = Counter("lambdaflow_api_requests", "API requests", ["endpoint", "status"], registry=metrics)
    latency = Histogram(
        "lambdaflow_api_seconds", "API latency", ["endpoint"], registry=metrics, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
    )
    token = settings.profile.serving.token
    bearer = HTTPBearer(auto_error=False)

    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        if credentials is None or not secrets.compare_digest(credentials.credentials, token):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(
        title="Lambdaflow serving API",
        version="0.1.0",
        description="Unified (batch + speed) views, predictions and on-demand scoring. Read-only; no caller-supplied SQL.",
    )

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Response:
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        latency.labels(endpoint).observe(time.perf_counter() - t0)
        requests.labels(endpoint, str(response.status_code)).inc()
        return response

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness and the table versions the API currently reads."""
        sessions.query("SELECT 1")
        return {"status": "ok", "tables": sessions._session.versions if sessions._session else {}}

    @app.get("/metrics", dependencies=[Depends(authorised)])
    def prometheus() -> Response:
        """Request counts and latencies in Prometheus text format."""
        return Response(generate_latest(metrics), media_type="text/plain; version=0.0.4")

    @app.get("/views/{view}/{key}", dependencies=[Depends(authorised)])
    def view_rows(view: str, key: str) -> dict[str, Any]:
        """Unified values of a view for one key (all its buckets), with the batch watermark and the freshest speed batch."""
        compiled = views.get(view)
        if compiled is None:
            raise HTTPException(404, f"unknown view {view!r}; views: {sorted(views)}")
        if len(compiled.spec.keys) != 1:
            raise HTTPException(400, f"view {view!r} has a composite key {compiled.spec.keys}: not addressable by one path segment")
        key_col = compiled.spec.keys[0]
        rows = sessions.query(f"SELECT * FROM {quote(unified_name(view))} WHERE {quote(key_col)} = ?", [key])
        fresh = sessions.query(
            f'SELECT "batch_watermark" AS w, "freshest_ingest_seq" AS s FROM {quote(FRESHNESS_VIEW)} WHERE "view_name" = ?', [view]
        ).to_pylist()[0]
        if rows.num_rows == 0:
            raise HTTPException(404, f"no rows for {key_col}={key!r} in {view}")
        return {
            "view": view,
            "key": {key_col: key},
            "batch_watermark": fresh["w"],
            "freshest_ingest_seq": fresh["s"],
            "rows": _jsonable(rows.to_pylist()),
        }

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

    @app.post("/score", dependencies=[Depends(authorised)])
    async def score(request: Request) -> dict[str, Any]:
        """Score one event now with the champion, using the same feature function and the key's current state."""
        body = await request.body()
        valid, _, rejects = validator.validate([RawRecord("api", 0, 0, None, body)])
        if rejects:
            raise HTTPException(422, rejects[0].reason)
        model = models.refresh()
        if model is None:
            raise HTTPException(503, "no champion model has been promoted yet")
        key = valid.column(ev.partition_key)[0].as_py()
        prior = {}
        for name in {f.view for f in pipeline.features if isinstance(f, ViewFeature)}:
            view = views[name]
            # the key's partial rows under the merge rule: batch as of W, speed rows after W
            part = sessions.query(f"SELECT * FROM ({to_duckdb(partial_rows_sql(view))}) AS p WHERE {quote(ev.partition_key)} = ?", [key])
            prior[name] = view.merge_arrow([part])
        vector = features.compute(valid, prior)

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
