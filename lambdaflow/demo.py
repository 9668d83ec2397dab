"""`lambdaflow demo`: the pipeline end to end on the embedded default, with progress throughout.

Stages run in order and each prints what it did. The stages that exist today:
start the embedded broker, produce a month of sample history with its late
chargebacks, count what the broker holds (by consuming), stop what was started.
The speed layer, the batch DAG run and the serving queries join as their
issues land.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console

from lambdaflow import producer, sample_data, services
from lambdaflow.config import Settings

console = Console()


def run(settings: Settings, events: int = 200_000, days: float = 30.0, keep_services: bool = False) -> dict[str, object]:
    """Run every available stage of the pipeline and return a report."""
    report: dict[str, object] = {}
    profile = settings.profile
    started = time.monotonic()

    def stage(title: str, fn: Callable[[], object]) -> object:
        console.rule(f"[bold]{title}")
        t0 = time.monotonic()
        result = fn()
        console.print(f"[dim]{title}: {time.monotonic() - t0:.1f}s[/]")
        return result

    already = {r.name for r in services.status(profile) if r.running}
    running = stage("1. embedded services", lambda: services.up(profile))
    for record in running.values():  # type: ignore[union-attr]
        console.print(f"  {record.name} pid {record.pid} at {record.address} ({record.storage or 'n/a'})")
    try:
        bootstrap = services.bootstrap_servers(profile)
        pipeline = settings.pipeline
        sample = stage(f"2. generate {events:,} sample events over {days:g} days", lambda: sample_data.generate(events, days))
        streams = [producer.Stream(pipeline.source.topic, sample.events, pipeline.events.partition_key, pipeline.events.time_column)]  # type: ignore[union-attr]
        if pipeline.labels is not None:
            streams.append(producer.Stream(pipeline.labels.topic, sample.labels, pipeline.events.partition_key, pipeline.labels.time_column))  # type: ignore[union-attr]
        for s in streams:
            services.ensure_topic(bootstrap, s.topic, pipeline.source.partitions)
        sent = stage("3. produce to Kafka", lambda: producer.produce(bootstrap, streams))
        counts = stage(
            "4. count what the broker holds (by consuming)",
            lambda: {s.topic: sum(services.count_records(bootstrap, s.topic).values()) for s in streams},
        )
        report.update(
            events=events,
            fraud_rate=round(sample.fraud_rate, 4),  # type: ignore[union-attr]
            produced=sent.sent,  # type: ignore[union-attr]
            held_by_broker=counts,
        )
    finally:
        if not keep_services and not already:  # stop only what this demo started
            stage("5. stop the services this demo started", lambda: services.down(profile))
    console.rule("[bold]report")
    for key, value in report.items():
        console.print(f"  {key:<16} {value}")
    console.print(f"  total time       {time.monotonic() - started:.0f}s")
    return report
