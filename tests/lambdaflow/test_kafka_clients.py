"""Kafka security settings (SASL/SSL) reach every client: producer, consumer and admin."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lambdaflow import services
from lambdaflow.config import ExternalKafka
from lambdaflow.errors import ConfigError
from tests.conftest import ROOT

CLIENTS = {"KafkaConsumer", "KafkaProducer", "KafkaAdminClient"}


def test_client_config_carries_the_security_settings(settings) -> None:
    kafka = ExternalKafka(
        kind="external",
        bootstrap_servers=["broker-1:9093"],
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="lambdaflow",
        sasl_password="s3cret",
        ssl_cafile="/etc/kafka/ca.pem",
    )
    config = services.client_config(settings.profile.model_copy(update={"kafka": kafka}))
    assert config == {
        "bootstrap_servers": ["broker-1:9093"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "lambdaflow",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/kafka/ca.pem",
    }
    assert services.producer_settings(settings.profile.model_copy(update={"kafka": kafka})) == {"enable_idempotence": True}


def test_sasl_without_credentials_is_a_config_error(tmp_path: Path) -> None:
    from lambdaflow.config import load_profile

    path = tmp_path / "profile.yaml"
    path.write_text(
        "storage: {kind: local, root: /tmp/x}\nkafka: {kind: external, bootstrap_servers: ['b:9093'], security_protocol: SASL_SSL}\n"
    )
    with pytest.raises(ConfigError, match="sasl_mechanism"):
        load_profile(path)


def test_every_client_is_built_from_the_profile_settings() -> None:
    """Regression: kafka.security_protocol was never passed to a client. Every client must take the settings as **kwargs."""
    bare = []
    for package in ("lambdaflow", "lambdaflow_app", "batch_layer", "speed_layer", "serving_layer"):
        for path in (ROOT / package).rglob("*.py"):
            lines = path.read_text().splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) in CLIENTS:
                    spread = any(k.arg is None for k in node.keywords)  # **config
                    plaintext = "embedded broker: plaintext" in lines[node.lineno - 1]
                    if not spread and not plaintext:
                        bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bare, f"Kafka clients built without the profile's settings: {bare}"
