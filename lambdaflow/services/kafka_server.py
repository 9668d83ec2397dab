"""Apache Kafka on one machine: a single KRaft node that is both broker and controller.

Started from the jars of ``deploy/jvm/kafka`` on the machine's Java 17, with every
listener on loopback. The log lives under ``<home>/services/kafka`` and survives a
restart (or a ``kill -9``): the node is formatted once, on first start. Producers are
idempotent with ``acks=all`` here (:func:`lambdaflow.services.producer_settings`).
"""

from __future__ import annotations

import base64
import subprocess
import uuid
from pathlib import Path

from lambdaflow.config import EmbeddedKafka, ProfileConfig
from lambdaflow.errors import ServiceError
from lambdaflow.services import jvm
from lambdaflow.services.kafka_clients import answers_metadata
from lambdaflow.services.process import ServiceRecord, free_port, record_process, spawn, state_dir, wait_until

__all__ = ["format_log", "start_kafka"]

_LOG4J = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
"""


def _properties(data: Path, port: int, controller_port: int) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data),
        # One node: every internal topic has one replica.
        "offsets.topic.replication.factor": "1",
        # 50 partitions by default: creating them on the first group join keeps a fresh node's consumers
        # waiting for a coordinator (NotCoordinatorError) for tens of seconds on two cores.
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",  # topics are created with their partition count (ensure_topic)
    }
    return "".join(f"{k}={v}\n" for k, v in settings.items())


def format_log(java: list[str], config: Path, cluster: str) -> None:
    """Format a fresh node's log directory (``kafka-storage format``) with the cluster id given.

    The id is passed as ``--cluster-id=<id>``: URL-safe base64 starts with ``-`` one time in 64, and
    ``-t -xyz`` is then read as an option ("expected one argument"), which once failed a CI run.

    Raises:
        ServiceError: the tool exits non-zero.
    """
    cmd = [*java, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster}", "-c", str(config)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise ServiceError(f"formatting the Kafka log of {config} failed: {(done.stdout + done.stderr)[-800:]}")


def start_kafka(profile: ProfileConfig, kafka: EmbeddedKafka, port: int | None = None, controller_port: int | None = None) -> ServiceRecord:
    """Format the node on first start, start it, and wait until it answers a metadata request.

    Raises:
        ServiceError: the jars are not fetched, formatting fails, or the broker does not come up.
    """
    home = state_dir(profile) / "kafka"
    data = home / "data"
    port = port or kafka.port or free_port()
    controller_port = controller_port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "server.properties"
    config.write_text(_properties(data, port, controller_port))
    (home / "log4j2.properties").write_text(_LOG4J)
    java = [jvm.java(17), "-Xms256m", "-Xmx1g", f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}"]
    java += ["-cp", jvm.classpath("kafka")]
    if not (data / "meta.properties").is_file():
        format_log(java, config, base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
    cmd = [*java, "kafka.Kafka", str(config)]
    log = state_dir(profile) / "broker.log"
    proc = spawn(cmd, log)
    address = f"127.0.0.1:{port}"
    waited = wait_until("broker (apache kafka)", lambda: answers_metadata(address), proc, log, 90, "no answer to a metadata request")
    return record_process("broker", proc, cmd, log, address, waited, storage=str(data), controller=f"127.0.0.1:{controller_port}")
