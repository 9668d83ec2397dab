"""Session fixtures: one storage root, one real broker and one Spark session per test run."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lambdaflow.config import Settings

ROOT = Path(__file__).resolve().parent.parent
LAMBDAFLOW = [sys.executable, "-m", "lambdaflow_app"]


#: Fixtures that start a real component: a test using any of them is an integration test.
INTEGRATION_FIXTURES = frozenset({"broker", "spark", "speed_env", "airflow_env", "pseudo", "kafka", "kafka_env"})
#: Modules whose every test runs a real component through a subprocess (CLI, services, Airflow, notebooks).
INTEGRATION_MODULES = ("test_services.py", "test_dags.py", "test_notebooks.py", "test_cli.py", "test_producer.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark integration tests by what they start, so `pytest -m "not integration"` runs in seconds."""
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in INTEGRATION_MODULES:
            item.add_marker(pytest.mark.integration)


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
        (ROOT / "conf/profiles/local.yaml")
        .read_text()
        .replace("storage: memory", "storage: s3")
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


@dataclass(frozen=True)
class PseudoStack:
    """The real stack of ``conf/profiles/pseudo.yaml`` (Apache Kafka, HDFS, Spark standalone, Trino), on free ports."""

    settings: Settings
    profile_path: Path
    home: Path
    bootstrap: list[str]

    @property
    def hdfs_root(self) -> str:
        return self.settings.profile.storage.uri


#: What the pseudo profile's ports are read from (conf/profiles/pseudo.yaml).
PSEUDO_PORTS = ("HDFS", "WEBHDFS", "KAFKA", "SPARK", "TRINO", "API", "AIRFLOW")


@pytest.fixture(scope="session")
def pseudo(tmp_path_factory: pytest.TempPathFactory, session_home: Path) -> Iterator[PseudoStack]:
    """The session's real stack, started by `lambdaflow services up --profile pseudo`, on free ports under a temp home.

    Never skipped: `make test` fetches the jars first (`make jvm`), and the fixture fetches them too.
    """
    from lambdaflow import services
    from lambdaflow.config import load_settings
    from lambdaflow.services import jvm

    home = tmp_path_factory.mktemp("pseudo-home")
    os.environ["LAMBDAFLOW_PSEUDO_HOME"] = str(home)
    os.environ["LAMBDAFLOW_METRICS_PORT"] = "0"
    for name in PSEUDO_PORTS:
        os.environ[f"LAMBDAFLOW_{name}_PORT"] = str(services.free_port())
    jvm.fetch()
    profile_path = ROOT / "conf/profiles/pseudo.yaml"
    run_cli("services", "up", "--profile", "pseudo", timeout=600)
    settings = load_settings(profile="pseudo", conf_dir=ROOT / "conf")
    _join_a_group(services.bootstrap_servers(settings.profile))
    try:
        yield PseudoStack(settings, profile_path, home, services.bootstrap_servers(settings.profile))
    finally:
        run_cli("services", "down", "--profile", "pseudo", check=False, timeout=300)


def _join_a_group(bootstrap: list[str], seconds: float = 120) -> None:
    """One consumer-group join on the fresh broker before any test's, so its group coordinator is loaded.

    Twice the session's first speed layer on a just-started Apache Kafka never joined its group (it polled,
    got nothing, and the drain timed out); later ones always did. The cause is not pinned down.
    """
    import time

    from kafka import KafkaConsumer

    from lambdaflow import services

    services.ensure_topic(bootstrap, "lambdaflow-warm-up", 1)
    consumer = KafkaConsumer("lambdaflow-warm-up", group_id="lambdaflow-warm-up", bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + seconds
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout_ms=500)
    finally:
        consumer.close()


@pytest.fixture(scope="session")
def kafka(pseudo: PseudoStack) -> list[str]:
    """The bootstrap list of the session's Apache Kafka (the pseudo stack's broker)."""
    return pseudo.bootstrap


@pytest.fixture
def kafka_env(tmp_path: Path, kafka: list[str]) -> SpeedEnv:
    """A pipeline with its own topics and local storage root on Apache Kafka (durability tests)."""
    return make_env(tmp_path, kafka)


# --------------------------------------------------------------------------- per-test pipelines


@dataclass
class SpeedEnv:
    """A pipeline with its own topics, storage root and consumer group, on the session broker."""

    settings: Settings
    pipeline_path: Path
    profile_path: Path
    bootstrap: list[str]

    @property
    def cli_args(self) -> list[str]:
        return ["--profile", str(self.profile_path), "--pipeline", str(self.pipeline_path)]


def make_env(tmp_path: Path, bootstrap: list[str], **speed: object) -> SpeedEnv:
    from lambdaflow.config import load_settings

    tag = uuid.uuid4().hex[:8]
    pipeline = yaml.safe_load((ROOT / "conf/pipeline.yaml").read_text())
    pipeline["source"]["topic"] = f"tx-{tag}"
    pipeline["labels"]["topic"] = f"cb-{tag}"
    pipeline_path = tmp_path / "pipeline.yaml"
    pipeline_path.write_text(yaml.safe_dump(pipeline))
    profile = yaml.safe_load((ROOT / "conf/profiles/local.yaml").read_text())
    profile["storage"]["root"] = str(tmp_path / "root")
    profile["kafka"] = {"kind": "external", "bootstrap_servers": bootstrap}
    profile["spark"]["conf"]["spark.driver.memory"] = "2g"
    profile["speed"] = {"consumer_group": f"speed-{tag}", "max_batch_records": 5000, "max_batch_seconds": 0.5, "metrics_port": 0, **speed}
    profile_path = tmp_path / "profile.yaml"
    profile_path.write_text(yaml.safe_dump(profile))
    return SpeedEnv(load_settings(str(profile_path), pipeline_path), pipeline_path, profile_path, bootstrap)


@pytest.fixture
def speed_env(tmp_path: Path, kafka: list[str]) -> SpeedEnv:
    """A pipeline on Apache Kafka (the pseudo stack's): the speed layer's exactness is tested on the real broker."""
    return make_env(tmp_path, kafka)
