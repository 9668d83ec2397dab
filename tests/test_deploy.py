"""The production stack on paper: the compose file, the Dockerfile and the cluster profile agree.

Docker cannot run here, so the compose file is checked structurally (and with
`docker compose config` where that plugin exists).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from urllib.parse import urlparse

import pytest
import yaml

from lambdaflow.config import load_profile, load_settings
from lambdaflow.errors import ConfigError
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yml").read_text())
SERVICES = COMPOSE["services"]
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.I)


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def _container_ports(service: dict) -> set[int]:
    """Ports the service listens on for the other services: published (``ports``) or internal only (``expose``)."""
    return {int(str(p).split(":")[-1].split("/")[0]) for p in [*service.get("ports", []), *service.get("expose", [])]}


#: The services reachable from outside the stack, each behind its own authentication.
AUTHENTICATED = {"api": "bearer token (serving.token)", "airflow-api": "Airflow's auth manager"}


def test_every_service_is_runnable_and_long_running_ones_have_health_checks() -> None:
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name
        one_shot = service.get("restart") == "no"
        if not one_shot and name not in ("datanode", "spark-worker", "airflow-scheduler", "airflow-dag-processor", "kafka-2", "kafka-3"):
            assert "healthcheck" in service, f"{name} has no health check"
        for dependency in service.get("depends_on") or {}:
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"


def test_volumes_and_mounted_files_exist() -> None:
    declared = set(COMPOSE.get("volumes", {}))
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).resolve().exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_no_credentials_in_the_file() -> None:
    for name, service in SERVICES.items():
        for key, value in _env(service).items():
            if SECRET_KEY.search(key) and key not in ("KAFKA_CONTROLLER_QUORUM_VOTERS",):
                assert str(value).startswith("${"), f"{name}.{key} holds a literal secret"
        for part in service.get("command", []) if isinstance(service.get("command"), list) else []:
            assert not re.search(r"://[^:/]+:[^$@]+@", str(part)), f"{name} has a password in its command"


def test_compose_agrees_with_the_cluster_profile() -> None:
    profile = load_profile(ROOT / "conf/profiles/cluster.yaml")
    for server in profile.kafka.bootstrap_servers:
        host, port = server.split(":")
        assert host in SERVICES and f":{port}" in _env(SERVICES[host])["KAFKA_LISTENERS"]
    hdfs = urlparse(profile.storage.root)
    assert hdfs.hostname in SERVICES and hdfs.port == 8020
    webhdfs = urlparse(profile.storage.webhdfs_url)
    assert webhdfs.hostname == hdfs.hostname and webhdfs.port in _container_ports(SERVICES[webhdfs.hostname])
    master = urlparse(profile.spark.master)
    assert master.scheme == "spark" and master.hostname in SERVICES and master.port == 7077
    assert profile.trino.host in SERVICES and profile.trino.port in _container_ports(SERVICES[profile.trino.host])
    mlflow = urlparse(profile.mlflow.tracking_uri)
    assert mlflow.hostname in SERVICES and mlflow.port in _container_ports(SERVICES[mlflow.hostname])
    assert profile.serving.port in _container_ports(SERVICES["api"])
    # the Lambdaflow containers point at exactly these addresses
    env = _env(SERVICES["speed"])
    assert env["LAMBDAFLOW_PROFILE"] == "cluster"
    assert env["LAMBDAFLOW_HDFS_ROOT"] == profile.storage.root and env["MLFLOW_TRACKING_URI"] == profile.mlflow.tracking_uri
    trino_catalog = (ROOT / "conf/trino/catalog/lambdaflow.properties").read_text()
    assert "connector.name=delta_lake" in trino_catalog and "delta.metadata.cache-ttl=5s" in trino_catalog
    assert any("lambdaflow.properties" in v for v in SERVICES["trino"]["volumes"])


def test_only_authenticated_services_publish_ports() -> None:
    published = {name for name, service in SERVICES.items() if service.get("ports")}
    assert published == set(AUTHENTICATED), f"only {sorted(AUTHENTICATED)} may publish ports; found {sorted(published)}"
    # the API cannot start without its token (compose refuses to run with it unset), and only the API is given it ...
    assert _env(SERVICES["api"])["LAMBDAFLOW_API_TOKEN"].startswith("${LAMBDAFLOW_API_TOKEN:?")
    assert [name for name, service in SERVICES.items() if "LAMBDAFLOW_API_TOKEN" in _env(service)] == ["api"]
    # ... and Airflow's UI keeps its login
    airflow = {k.upper(): str(v).lower() for k, v in _env(SERVICES["airflow-api"]).items()}
    assert airflow.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "false") == "false"
    # everything else is reachable only on the stack's internal network, which has no way out
    networks = COMPOSE.get("networks") or {}
    internal = {name for name, network in networks.items() if (network or {}).get("internal") is True}
    assert internal, "declare an internal network for the services that publish nothing"
    for name, service in SERVICES.items():
        attached = set(service.get("networks") or ["default"])
        assert attached <= set(networks), f"{name} joins an undeclared network {attached - set(networks)}"
        if name not in AUTHENTICATED:
            assert attached <= internal, f"{name} must be on internal networks only, not {sorted(attached - internal)}"
        assert attached & internal, f"{name} cannot reach the other services"


def test_the_cluster_profile_serves_on_a_public_address_only_with_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving_layer.api import create_app

    profile = load_profile(ROOT / "conf/profiles/cluster.yaml")
    assert profile.serving.host not in ("127.0.0.1", "localhost", "::1")  # published by compose: a token is a must
    monkeypatch.delenv("LAMBDAFLOW_API_TOKEN", raising=False)
    tokenless = load_settings(profile="cluster", conf_dir=ROOT / "conf")
    with pytest.raises(ConfigError, match=r"serving\.token"):
        create_app(tokenless)
    monkeypatch.setenv("LAMBDAFLOW_API_TOKEN", "t0ken")
    settings = load_settings(profile="cluster", conf_dir=ROOT / "conf")
    assert settings.profile.serving.token == "t0ken"
    create_app(settings)  # builds without reaching any service


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11" in text and "openjdk-17" in text
    assert re.search(r"^USER (?!root)\w+", text, re.M), "the image must not run as root"
    assert "HEALTHCHECK" in text and "ARG DELTA_SPARK_JARS" in text
    assert text.index("COPY constraints.txt") < text.index("COPY lambdaflow"), "dependencies must be a layer below the code"


@pytest.mark.skipif(
    shutil.which("docker") is None or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose plugin is not installed here; the structural checks above stand in for it",
)
def test_docker_compose_config_accepts_the_file() -> None:
    env = {"LAMBDAFLOW_API_TOKEN": "x", "KAFKA_CLUSTER_ID": "x", "AIRFLOW_DB_PASSWORD": "x", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "compose.yml"), "config", "-q"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
