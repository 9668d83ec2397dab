"""How every kafka-python client reaches the profile's Kafka, and the topic helpers built on that.

The same functions serve the embedded brokers (Tansu, Apache Kafka started by
``services up``) and an external cluster: callers never spell a bootstrap list.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lambdaflow.config import EmbeddedKafka, ExternalKafka, ProfileConfig
from lambdaflow.errors import ServiceError
from lambdaflow.services.process import is_running, read_state

__all__ = [
    "CONSUMER_TIMEOUTS",
    "Endpoint",
    "answers_metadata",
    "bootstrap_servers",
    "client_config",
    "connect_kwargs",
    "count_records",
    "ensure_topic",
    "iter_topic",
    "list_topics",
    "producer_settings",
]

#: Client session timeouts short enough for Tansu, where a group joins after about half the session timeout
#: (docs/architecture.md §8); harmless on Apache Kafka.
CONSUMER_TIMEOUTS: dict[str, int] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


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

    Apache Kafka (external, or embedded with ``broker: apache``) deduplicates a retried batch
    of an idempotent producer. The embedded Tansu broker speaks the protocol but can lose
    acknowledged records of an idempotent producer when it crashes (docs/architecture.md §8),
    so there the producer retries plainly and the speed layer drops the repeated deliveries.
    """
    kafka = profile.kafka
    return {"enable_idempotence": isinstance(kafka, ExternalKafka) or (isinstance(kafka, EmbeddedKafka) and kafka.broker == "apache")}


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
    (``end_offsets()`` under-reports on Tansu, docs/architecture.md §8; the high-water mark
    of fetches is right on every broker).
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


def answers_metadata(address: str) -> bool:
    """True when a plaintext broker at ``address`` answers a metadata request (readiness of an embedded broker)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=address, request_timeout_ms=3000)  # embedded broker: plaintext
    except (KafkaError, OSError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()
