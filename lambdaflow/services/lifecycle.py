"""``services up|down|status``: start the profile's local services in dependency order, stop exactly those.

What runs follows from the profile: an embedded broker (Tansu, or Apache Kafka with
``kafka.broker: apache``), an embedded HDFS (``storage.embedded``), a Spark standalone
cluster (``spark.embedded``) and a Trino server (``trino.embedded``). Each is health-checked
before the next starts; a failure names the service and its log. Start-up times are kept
in the state file and shown by ``status``.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass

from lambdaflow.config import EmbeddedKafka, HdfsStorage, ProfileConfig
from lambdaflow.errors import ServiceError
from lambdaflow.services import hdfs, jvm, kafka_server, spark_cluster, tansu, trino_server
from lambdaflow.services.process import ServiceRecord, is_running, read_state, state_dir, stop, write_state

__all__ = ["ServiceStatus", "down", "kill_broker", "planned", "restart_broker", "status", "up"]

#: Start order; ``down`` stops in reverse, after every process not named here (speed layer, API, Airflow).
ORDER = ("moto", "namenode", "datanode", "broker", "spark-master", "spark-worker", "trino")


def planned(profile: ProfileConfig) -> list[str]:
    """The services ``up`` starts for this profile, in start order."""
    names: list[str] = []
    if isinstance(profile.kafka, EmbeddedKafka) and profile.kafka.broker == "tansu" and profile.kafka.storage == "s3":
        names.append("moto")
    if isinstance(profile.storage, HdfsStorage) and profile.storage.embedded:
        names += ["namenode", "datanode"]
    if isinstance(profile.kafka, EmbeddedKafka):
        names.append("broker")
    if profile.spark.embedded:
        names += ["spark-master", "spark-worker"]
    if profile.trino.embedded:
        names.append("trino")
    return names


def _runs_on_the_jvm(name: str, profile: ProfileConfig) -> bool:
    """Services started from the jars of deploy/jvm/pom.xml (everything but Tansu and moto)."""
    if name == "broker":
        return isinstance(profile.kafka, EmbeddedKafka) and profile.kafka.broker == "apache"
    return name != "moto"


def _start(profile: ProfileConfig, name: str, state: dict[str, ServiceRecord]) -> ServiceRecord:
    if name == "moto":
        return tansu.start_moto(profile)
    if name == "namenode":
        return hdfs.start_namenode(profile)
    if name == "datanode":
        return hdfs.start_datanode(profile, state["namenode"])
    if name == "broker":
        kafka = profile.kafka
        assert isinstance(kafka, EmbeddedKafka)
        if kafka.broker == "apache":
            return kafka_server.start_kafka(profile, kafka)
        return tansu.start_tansu(profile, kafka, state.get("moto"))
    if name == "spark-master":
        return spark_cluster.start_master(profile)
    if name == "spark-worker":
        return spark_cluster.start_worker(profile, state["spark-master"])
    if name == "trino":
        return trino_server.start_trino(profile)
    raise ServiceError(f"unknown service {name}")


def up(profile: ProfileConfig, on_start: Callable[[str], None] | None = None) -> dict[str, ServiceRecord]:
    """Start every planned service that is not already running, in order, each health-checked.

    Args:
        profile: the profile whose services to start.
        on_start: called with a service's name before it starts, and with ``"jvm artefacts"`` before
            they are fetched (progress display).

    Returns:
        The running services.

    Raises:
        ServiceError: the profile plans no service, the jars cannot be fetched, or a service failed to come up
            (named, with its log).
    """
    names = planned(profile)
    if not names:
        raise ServiceError("the profile runs no local service (an external Kafka, no embedded HDFS, Spark or Trino): nothing to start")
    state = {k: v for k, v in read_state(profile).items() if is_running(v)}
    if any(_runs_on_the_jvm(name, profile) for name in names if name not in state):
        if on_start:
            on_start("jvm artefacts")
        jvm.fetch()  # a no-op once the caches match deploy/jvm/pom.xml
    for name in names:
        if name in state:
            continue
        if on_start:
            on_start(name)
        state[name] = _start(profile, name, state)
        write_state(profile, state)  # a later failure leaves the started ones recorded for `down`
    return state


def kill_broker(profile: ProfileConfig) -> ServiceRecord:
    """``kill -9`` the embedded broker (a crash, for durability tests and the chaos bench)."""
    record = read_state(profile).get("broker")
    if record is None or not is_running(record):
        raise ServiceError("no running broker was started by `lambdaflow services up`")
    stop(record, timeout=10, sig=signal.SIGKILL)
    return record


def restart_broker(profile: ProfileConfig) -> ServiceRecord:
    """Stop the broker (if it runs) and start it again on the same address; other services keep running."""
    state = read_state(profile)
    old = state.get("broker")
    if old is None:
        raise ServiceError("no broker was started by `lambdaflow services up`")
    stop(old, timeout=30)
    kafka = profile.kafka
    assert isinstance(kafka, EmbeddedKafka)
    port = int(old.address.rsplit(":", 1)[1])
    if kafka.broker == "apache":
        controller = int(old.extra["controller"].rsplit(":", 1)[1])
        state["broker"] = kafka_server.start_kafka(profile, kafka, port=port, controller_port=controller)
    else:
        state["broker"] = tansu.start_tansu(profile, kafka, state.get("moto"), port=port)
    write_state(profile, state)
    return state["broker"]


def down(profile: ProfileConfig) -> list[str]:
    """Stop the services this home's ``up`` started, and only those (clients first, storage last).

    Returns:
        Names of the services that were stopped.
    """
    state = read_state(profile)
    order = [n for n in state if n not in ORDER] + [n for n in reversed(ORDER) if n in state]
    patient = {"airflow-scheduler": 30, "airflow-api": 30, "broker": 30, "trino": 30, "namenode": 20, "datanode": 20}
    stopped = [name for name in order if stop(state[name], timeout=patient.get(name, 10))]
    (state_dir(profile) / "state.json").unlink(missing_ok=True)
    return stopped


@dataclass(frozen=True)
class ServiceStatus:
    """What ``lambdaflow services status`` reports for one service."""

    name: str
    running: bool
    pid: int
    address: str
    storage: str
    log: str
    ready_seconds: float


def status(profile: ProfileConfig) -> list[ServiceStatus]:
    return [ServiceStatus(r.name, is_running(r), r.pid, r.address, r.storage, r.log, r.ready_seconds) for r in read_state(profile).values()]
