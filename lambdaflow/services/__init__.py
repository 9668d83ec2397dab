"""The services Lambdaflow runs on one machine, and how clients reach Kafka.

- :mod:`~lambdaflow.services.lifecycle`: ``up`` / ``down`` / ``status`` of what the profile embeds.
- :mod:`~lambdaflow.services.tansu`: the embedded default broker (and moto for its S3 store).
- :mod:`~lambdaflow.services.kafka_server`, :mod:`~lambdaflow.services.hdfs`,
  :mod:`~lambdaflow.services.spark_cluster`, :mod:`~lambdaflow.services.trino_server`: the real
  stack (``conf/profiles/pseudo.yaml``), from the jars of :mod:`~lambdaflow.services.jvm`.
- :mod:`~lambdaflow.services.process`: PIDs, logs, readiness and stopping, shared by all of them.
- :mod:`~lambdaflow.services.kafka_clients`: client settings and topic helpers for any Kafka.
"""

from lambdaflow.errors import ServiceError
from lambdaflow.services.kafka_clients import (
    CONSUMER_TIMEOUTS,
    Endpoint,
    bootstrap_servers,
    client_config,
    connect_kwargs,
    count_records,
    ensure_topic,
    iter_topic,
    list_topics,
    producer_settings,
)
from lambdaflow.services.lifecycle import ServiceStatus, down, kill_broker, planned, restart_broker, status, up
from lambdaflow.services.process import ServiceRecord, free_port, is_running, read_state, start_process, state_dir

__all__ = [
    "CONSUMER_TIMEOUTS",
    "Endpoint",
    "ServiceError",
    "ServiceRecord",
    "ServiceStatus",
    "bootstrap_servers",
    "client_config",
    "connect_kwargs",
    "count_records",
    "down",
    "ensure_topic",
    "free_port",
    "is_running",
    "iter_topic",
    "kill_broker",
    "list_topics",
    "planned",
    "producer_settings",
    "read_state",
    "restart_broker",
    "start_process",
    "state_dir",
    "status",
    "up",
]
