"""Apache Kafka as the speed layer's broker: a kill -9 of the broker loses no acknowledged record.

The producer is idempotent with acks=all (what ``producer_settings`` gives an Apache Kafka),
the speed layer runs throughout, and the broker is killed with SIGKILL in the middle of the
stream and restarted on the same address. Every record the broker acknowledged must be in
the topic once and in ``master/events`` once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from kafka import KafkaProducer

from lambdaflow import services
from lambdaflow.contracts.speed import SpeedTables
from lambdaflow.producer import encode_row
from lambdaflow.sample_data import generate
from tests.conftest import PseudoStack, SpeedEnv
from tests.speed_layer.test_speed_layer import start

EVENTS = 20_000


def test_kill_9_of_the_broker_loses_no_acknowledged_record(kafka_env: SpeedEnv, pseudo: PseudoStack) -> None:
    pipeline = kafka_env.settings.pipeline
    topic, key, id_column = pipeline.source.topic, pipeline.events.partition_key, pipeline.events.id_column
    services.ensure_topic(kafka_env.bootstrap, topic, pipeline.source.partitions)
    rows = generate(EVENTS, days=2, seed=71).events.to_pylist()
    settings = services.producer_settings(kafka_env.settings.profile)
    assert settings == {"enable_idempotence": True}  # Apache Kafka keeps the idempotent producer's promise
    producer = KafkaProducer(
        bootstrap_servers=kafka_env.bootstrap, acks="all", retries=1_000_000, delivery_timeout_ms=240_000, linger_ms=5, **settings
    )
    acked: list[str] = []
    failed: list[str] = []
    lock = threading.Lock()

    def on_ack(event_id: str) -> None:
        with lock:
            acked.append(event_id)

    def send_all() -> None:
        for i, row in enumerate(rows):
            future = producer.send(topic, key=str(row[key]).encode(), value=encode_row(row))
            future.add_callback(lambda _meta, event_id=row[id_column]: on_ack(event_id))
            future.add_errback(lambda _exc, event_id=row[id_column]: failed.append(event_id))
            if i % 500 == 0:
                time.sleep(0.05)  # about 10k records/s: the kill lands mid-stream
        producer.flush()

    speed = start(kafka_env, "--idle-exit", "25")
    sender = threading.Thread(target=send_all)
    sender.start()
    while len(acked) < EVENTS // 3:
        time.sleep(0.05)
    killed = services.kill_broker(pseudo.settings.profile)  # SIGKILL: no clean shutdown, no flush
    at_kill = len(acked)
    time.sleep(2)
    restarted = services.restart_broker(pseudo.settings.profile)
    sender.join(timeout=300)
    producer.close()
    _, err = speed.communicate(timeout=600)

    assert restarted.address == killed.address and restarted.pid != killed.pid
    assert 0 < at_kill < EVENTS, "the kill did not land in the middle of the stream"
    assert speed.returncode == 0, err[-3000:]
    assert not failed and len(acked) == EVENTS  # every send was acknowledged in the end (retried across the outage)
    in_topic = Counter(r.value for r in services.iter_topic(kafka_env.bootstrap, topic))
    assert len(in_topic) == EVENTS and max(in_topic.values()) == 1  # each acknowledged record once: no loss, no duplicate
    master = SpeedTables(kafka_env.settings).master.snapshot().to_arrow()
    ids = Counter(master.column(id_column).to_pylist())
    assert set(ids) == set(acked) and max(ids.values()) == 1
