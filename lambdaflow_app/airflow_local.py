"""Airflow on one machine: a SQLite metadata DB under the storage root, the project's DAG folder.

Used by the demo (``airflow dags test`` on the embedded profile; on the pseudo profile a run
started by the scheduler through the REST API) and by ``lambdaflow up`` (API server, scheduler, DAG processor).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lambdaflow import services
from lambdaflow.config import Settings
from lambdaflow.contracts.paths import local_home
from lambdaflow.errors import ServiceError

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "dags"


def airflow_env(settings: Settings, port: int | None = None) -> dict[str, str]:
    """Environment for Airflow processes: home under the storage root, our DAGs, our configuration."""
    home = local_home(settings.profile) / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",  # keeps a local Airflow near 2 GB on this machine (docs/architecture.md §8)
        "LAMBDAFLOW_PROFILE": str(settings.profile_path.resolve()),
        "LAMBDAFLOW_PIPELINE": str(settings.pipeline_path.resolve()),
        "LAMBDAFLOW_CONF": str(settings.profile_path.resolve().parent.parent),
        "PYTHONPATH": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if port is not None:
        env["AIRFLOW__API__PORT"] = str(port)
        env["AIRFLOW__API__HOST"] = "127.0.0.1"  # the UI stays on loopback
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://127.0.0.1:{port}/execution/"
    return env


def airflow_bin() -> str:
    return str(Path(sys.executable).parent / "airflow")


def migrate(env: dict[str, str]) -> None:
    """Create or upgrade the metadata DB (needed before any DAG run)."""
    subprocess.run([airflow_bin(), "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)


def test_dag(env: dict[str, str], dag_id: str, on_line: Callable[[str], None] | None = None) -> tuple[bool, list[str]]:
    """Run one DAG run now with ``airflow dags test``; returns success and the log lines."""
    proc = subprocess.Popen([airflow_bin(), "dags", "test", dag_id], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in _lines(proc):
        lines.append(line)
        if on_line:
            on_line(line)
    proc.wait()
    text = "".join(lines[-50:])
    return proc.returncode == 0 and "state=success" in text, lines


def _lines(proc: subprocess.Popen[str]) -> Iterator[str]:
    assert proc.stdout is not None
    yield from proc.stdout


def start_scheduler(settings: Settings, port: int | None = None) -> tuple[dict[str, str], str]:
    """Airflow's API server (UI and REST API), scheduler and DAG processor, each a recorded process on loopback.

    Not ``airflow standalone``: its scheduler and triggerer start Airflow's log server, which binds every
    interface (hard-coded in Airflow 3.3); with a LocalExecutor on one machine the API server reads task logs
    from disk, so the scheduler runs with ``--skip-serve-logs`` and no triggerer is needed (no deferrable task).

    Returns:
        The Airflow environment and the API's base URL.
    """
    port = port or settings.profile.airflow.port
    env = airflow_env(settings, port)
    env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
    env["AIRFLOW__CORE__AUTH_MANAGER"] = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    migrate(env)
    url = f"http://127.0.0.1:{port}"
    profile, airflow = settings.profile, airflow_bin()
    services.start_process(profile, "airflow-api", [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)], env, url, port, 240)
    services.start_process(profile, "airflow-scheduler", [airflow, "scheduler", "--skip-serve-logs"], env=env)
    services.start_process(profile, "airflow-dag-processor", [airflow, "dag-processor"], env=env)
    return env, url


class AirflowApi:
    """Airflow's REST API (v2), logged in with the password its simple auth manager generated."""

    def __init__(self, url: str, home: Path, timeout: float = 120, retry_for: float = 120) -> None:
        self.url, self.retry_for = url, retry_for
        deadline = time.monotonic() + timeout
        passwords = home / "simple_auth_manager_passwords.json.generated"
        while not passwords.is_file() and time.monotonic() < deadline:
            time.sleep(1)
        if not passwords.is_file():
            raise ServiceError(f"Airflow wrote no generated password within {timeout:.0f}s ({passwords}); see its log")
        user, password = next(iter(json.loads(passwords.read_text()).items()))
        self.token = str(self._call("POST", "/auth/token", {"username": user, "password": password}, auth=False)["access_token"])

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, auth: bool = True) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        return request_json(urllib.request.Request(self.url + path, data=data, method=method, headers=headers), self.retry_for)

    def trigger(self, dag_id: str, timeout: float = 180) -> str:
        """Unpause the DAG once the DAG processor has parsed it, start a run now; returns the run id.

        The run id is chosen here, so a creation retried after a dropped connection finds its own
        run (409) instead of starting a second one.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
                break
            except urllib.error.HTTPError as exc:
                if exc.code != 404 or time.monotonic() > deadline:  # 404: not parsed yet
                    raise
                time.sleep(2)
        run_id = f"lambdaflow__{dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%M:%S}__{uuid.uuid4().hex[:8]}"
        try:
            self._call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None})
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # 409: an attempt whose answer was lost created it
                raise
        return run_id

    def wait(self, dag_id: str, run_id: str, on_task: Callable[[str, str], None] | None = None, timeout: float = 3600) -> str:
        """Poll the run until it ends; ``on_task(task_id, state)`` on every change of a task's state. Returns the run's state."""
        seen: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tasks = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
            for task in tasks:
                state = str(task.get("state") or "none")
                if seen.get(task["task_id"]) != state:
                    seen[task["task_id"]] = state
                    if on_task:
                        on_task(task["task_id"], state)
            state = str(self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])
            if state in ("success", "failed"):
                return state
            time.sleep(3)
        raise TimeoutError(f"DAG run {dag_id}/{run_id} did not finish within {timeout:.0f}s")


# A dropped connection, a refused one while a worker restarts, a gateway error: worth asking again.
_TRANSIENT = (ConnectionError, http.client.RemoteDisconnected, http.client.IncompleteRead, TimeoutError)


def _transient(exc: Exception) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in (502, 503, 504)
    if isinstance(exc, urllib.error.URLError):
        return isinstance(exc.reason, _TRANSIENT)
    return isinstance(exc, _TRANSIENT)


def request_json(request: urllib.request.Request, retry_for: float) -> dict[str, Any]:
    """Send ``request`` and decode its JSON answer, asking again for up to ``retry_for`` seconds after transient failures.

    The API server on a loaded 2-core machine does drop a connection now and then (CI: one
    RemoteDisconnected while polling a DAG run ended a 20-minute loop). Every call made here is
    idempotent or made so by its caller, so asking again is safe.

    Raises:
        urllib.error.HTTPError: at once, for an answer that is an error and not a transient one.
        ServiceError: when the API stayed unreachable for ``retry_for`` seconds, naming the last failure.
    """
    deadline, pause = time.monotonic() + retry_for, 0.5
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return dict(json.load(answer))
        except Exception as exc:
            if not _transient(exc):
                raise
            if time.monotonic() + pause > deadline:
                raise ServiceError(
                    f"Airflow's API at {request.full_url} failed for {retry_for:.0f}s ({type(exc).__name__}: {exc}); "
                    "see the airflow-api log listed by `lambdaflow services status`"
                ) from exc
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
