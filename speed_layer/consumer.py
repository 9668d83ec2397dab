"""kafka-python consumer helpers of the fetch process (kafka-python and the standard library only)."""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any

__all__ = ["commit_failed", "load", "seek", "wait_for_partitions"]

log = logging.getLogger("lambdaflow.speed.fetch")

#: How long a topic may show no partitions in the consumer's metadata before the layer gives up.
METADATA_WAIT_SECONDS = 30.0


def wait_for_partitions(consumer: Any, topic: str, seconds: float = METADATA_WAIT_SECONDS) -> None:
    """Block until the consumer's metadata lists the topic's partitions.

    A group leader whose metadata lacks them (a topic created a moment ago) assigns nothing, and kafka-python
    3.0 does not rejoin when they appear: the member sat with no partitions until the drain timed out
    ("No partition metadata for topic …", then "assigned []": the suite's stuck first joins).
    """
    deadline = time.monotonic() + seconds
    while not consumer.partitions_for_topic(topic):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kafka lists no partitions for topic {topic!r} after {seconds:.0f} s")
        time.sleep(0.1)


def seek(consumer: Any, partitions: Any, positions: dict[tuple[str, int], int | None]) -> None:
    """Put each partition where the tables say it stands (from the start of the log when they know nothing).

    A partition the answer does not name is left alone (still the old assignment, being revoked).
    """
    for tp in partitions:
        if (tp.topic, tp.partition) not in positions:
            continue
        offset = positions[(tp.topic, tp.partition)]
        if offset is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, offset)


def commit_failed(offsets: Any, result: Any) -> None:
    if isinstance(result, Exception):
        log.warning("could not commit group offsets (monitoring only): %s", result)


def load(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)
