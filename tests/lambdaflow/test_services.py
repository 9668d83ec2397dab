"""The embedded broker started through the CLI, records counted by consuming, and `down` stopping only its own."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from lambdaflow import services
from tests.conftest import run_cli


def _topic_count(status_output: str, topic: str) -> int:
    match = re.search(rf"{topic}\s*│\s*\d+\s*│\s*([\d,]+)", status_output)
    assert match, status_output
    return int(match.group(1).replace(",", ""))


def test_up_produce_status_counts_every_record(broker: list[str], test_profile: Path) -> None:
    """`services up` (the fixture) → `produce --events 30000` → `status` shows 30,000 records, counted by consuming."""
    produced = run_cli("produce", "--events", "30000", "--days", "30", "--topic", "svc-test", "--no-labels", profile=test_profile)
    assert "sent 30,000 records to svc-test" in produced.stdout
    status = run_cli("services", "status", profile=test_profile)
    assert "running" in status.stdout
    assert _topic_count(status.stdout, "svc-test") == 30_000
    # an independent count with a plain consumer agrees, partition by partition
    per_partition = services.count_records(broker, "svc-test")
    assert sum(per_partition.values()) == 30_000 and len(per_partition) == 4


def test_up_twice_reuses_the_running_broker(broker: list[str], test_profile: Path, settings) -> None:
    before = services.read_state(settings.profile)["broker"].pid
    run_cli("services", "up", profile=test_profile)
    assert services.read_state(settings.profile)["broker"].pid == before


def test_s3_storage_survives_a_broker_restart(broker: list[str], settings) -> None:
    from kafka import KafkaProducer

    services.ensure_topic(broker, "durable", 2)
    producer = KafkaProducer(bootstrap_servers=broker, acks="all")
    for i in range(500):
        producer.send("durable", key=str(i % 7).encode(), value=str(i).encode())
    producer.flush()
    producer.close()
    record = services.restart_broker(settings.profile)
    assert services.bootstrap_servers(settings.profile) == broker  # same address after restart
    assert record.storage.startswith("s3://")
    values = sorted(int(r.value) for r in services.iter_topic(broker, "durable"))
    assert values == list(range(500))


def test_down_only_stops_what_up_started(tmp_path: Path, settings) -> None:
    """A recorded PID that now runs another program (PID reuse) is left alone."""
    from lambdaflow.config import LocalStorage

    profile = settings.profile.model_copy(update={"storage": LocalStorage(kind="local", root=str(tmp_path))})
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state_file = services.state_dir(profile) / "state.json"
        state_file.parent.mkdir(parents=True)
        fake = {
            "broker": {
                "name": "broker",
                "pid": stranger.pid,
                "address": "127.0.0.1:1",
                "cmdline": ["tansu", "broker"],
                "log": "",
                "started_at": time.time(),
            }
        }
        state_file.write_text(json.dumps(fake))
        assert services.down(profile) == []
        assert stranger.poll() is None  # still alive
    finally:
        stranger.kill()
        stranger.wait()


def test_bootstrap_without_broker_is_a_clear_error(tmp_path: Path, settings) -> None:
    from lambdaflow.config import LocalStorage

    profile = settings.profile.model_copy(update={"storage": LocalStorage(kind="local", root=str(tmp_path))})
    try:
        services.bootstrap_servers(profile)
    except services.ServiceError as exc:
        assert "lambdaflow services up" in str(exc)
    else:
        raise AssertionError("expected a ServiceError")
