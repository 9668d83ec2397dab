"""The pseudo stack's services as an operator meets them: loopback only, health-checked, clear when they fail."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil
import pytest

from lambdaflow import services
from lambdaflow.config import ExternalKafka, HdfsStorage, ProfileConfig
from lambdaflow.errors import ServiceError
from tests.conftest import PseudoStack, run_cli


def test_every_service_listens_on_loopback_only(pseudo: PseudoStack) -> None:
    """Nothing the stack starts listens beyond loopback: none of them authenticates (Trino, Spark, HDFS, Kafka)."""
    state = services.read_state(pseudo.settings.profile)
    assert set(services.planned(pseudo.settings.profile)) <= set(state)
    listening: dict[str, list[str]] = {}
    for name, record in state.items():
        proc = psutil.Process(record.pid)
        for member in [proc, *proc.children(recursive=True)]:
            for conn in member.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening.setdefault(name, []).append(conn.laddr.ip)
    assert {"namenode", "datanode", "broker", "spark-master", "spark-worker", "trino"} <= set(listening)
    public = {name: ips for name, ips in listening.items() if any(ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip in ips)}
    assert not public, public


def test_status_reports_every_service_with_its_start_up_time(pseudo: PseudoStack) -> None:
    out = run_cli("services", "status", "--profile", "pseudo", "--no-count").stdout
    for name in ("namenode", "datanode", "broker", "spark-master", "spark-worker", "trino"):
        assert name in out
    assert all(r.ready_seconds > 0 for r in services.status(pseudo.settings.profile) if r.name in services.planned(pseudo.settings.profile))


def test_a_service_that_cannot_start_is_named_with_its_log(tmp_path: Path) -> None:
    """A NameNode whose RPC port another process holds: one error naming the service and its log; nothing left running."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        storage = HdfsStorage(
            kind="hdfs", embedded=True, root=f"hdfs://127.0.0.1:{port}/x", webhdfs_url=f"http://127.0.0.1:{services.free_port()}"
        )
        profile = ProfileConfig(
            home=str(tmp_path), storage=storage, kafka=ExternalKafka(kind="external", bootstrap_servers=["127.0.0.1:1"])
        )
        assert services.planned(profile) == ["namenode", "datanode"]
        with pytest.raises(ServiceError) as failure:
            services.up(profile)
    message = str(failure.value)
    assert message.startswith("namenode ") and str(tmp_path / "services" / "namenode.log") in message
    assert services.down(profile) == []  # the failed start recorded nothing that still runs


def test_a_cluster_id_starting_with_a_dash_formats(tmp_path: Path, pseudo: PseudoStack) -> None:
    """One random cluster id in 64 starts with ``-``; ``-t -xyz`` failed a CI run as "expected one argument"."""
    from lambdaflow.services import jvm
    from lambdaflow.services.kafka_server import format_log

    config = tmp_path / "server.properties"
    data = tmp_path / "data"
    config.write_text(
        "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@127.0.0.1:1\n"
        "listeners=PLAINTEXT://127.0.0.1:2,CONTROLLER://127.0.0.1:1\ncontroller.listener.names=CONTROLLER\n"
        f"log.dirs={data}\n"
    )
    cluster = "-" + "A" * 21
    format_log([jvm.java(17), "-cp", jvm.classpath("kafka")], config, cluster)
    assert f"cluster.id={cluster}" in (data / "meta.properties").read_text()
