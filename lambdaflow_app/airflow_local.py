"""Airflow on one machine: a SQLite metadata DB under the storage root, the project's DAG folder.

Used by the demo (``airflow dags test``) and by ``lambdaflow up`` (``airflow standalone``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from lambdaflow.config import Settings
from lambdaflow.contracts.paths import local_path
from lambdaflow.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "dags"


def airflow_env(settings: Settings, port: int | None = None) -> dict[str, str]:
    """Environment for Airflow processes: home under the storage root, our DAGs, our configuration."""
    uri = settings.profile.storage.uri
    if not uri.startswith("file://"):
        raise ConfigError(f"the local Airflow needs a local storage root (storage.kind: local); the profile has {uri}")
    home = local_path(uri) / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",  # keeps `airflow standalone` near 2 GB on this machine (docs/architecture.md §8)
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
