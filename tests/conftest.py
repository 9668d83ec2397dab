"""Session fixtures: one storage root, one real broker and one Spark session per test run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAMBDAFLOW = [sys.executable, "-m", "lambdaflow.cli"]


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The storage root of the test session (LAMBDAFLOW_HOME for every CLI call)."""
    home = tmp_path_factory.mktemp("lambdaflow-home")
    os.environ["LAMBDAFLOW_HOME"] = str(home)
    os.environ["LAMBDAFLOW_CONF"] = str(ROOT / "conf")
    return home


@pytest.fixture(scope="session")
def test_profile(session_home: Path) -> Path:
    """A local profile whose broker keeps records in S3 (a local moto server), so a restart can be tested."""
    path = session_home / "test-profile.yaml"
    path.write_text(
        (ROOT / "conf/profiles/local.yaml").read_text().replace("storage: memory", "storage: s3")
        .replace("spark.driver.memory: 4g", "spark.driver.memory: 2g")
    )
    return path


@pytest.fixture(scope="session")
def settings(test_profile: Path):
    from lambdaflow.config import load_settings

    return load_settings(profile=str(test_profile), conf_dir=ROOT / "conf")


def run_cli(*args: str, profile: Path | None = None, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the `lambdaflow` command line as a user would."""
    cmd = [*LAMBDAFLOW, *(["--profile", str(profile)] if profile else []), *args]
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def broker(test_profile: Path, settings) -> Iterator[list[str]]:
    """The session's real Kafka-protocol broker, started by `lambdaflow services up`."""
    from lambdaflow import services

    run_cli("services", "up", profile=test_profile)
    try:
        yield services.bootstrap_servers(settings.profile)
    finally:
        run_cli("services", "down", profile=test_profile, check=False)


@pytest.fixture(scope="session")
def spark(settings):
    """The session's Spark (local mode)."""
    from lambdaflow.spark import get_spark

    session = get_spark(settings.profile.spark, app_name="lambdaflow-tests")
    yield session
    session.stop()
