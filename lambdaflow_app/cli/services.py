"""``lambdaflow services up|down|status|restart-broker``: the embedded broker (and moto for s3 storage)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table as RichTable

from lambdaflow import services
from lambdaflow_app.cli._common import console, state

app = typer.Typer(help="Embedded services (Kafka-compatible broker, moto S3).", no_args_is_help=True)


@app.command("up")
def services_up() -> None:
    """Start the embedded broker (and moto for s3 storage); wait until it answers."""
    profile = state.settings().profile
    with console.status("starting the embedded broker…"):
        running = services.up(profile)
    for record in running.values():
        console.print(f"[green]up[/] {record.name:<7} pid {record.pid:<8} {record.address}  {record.storage}")
    console.print(f"state: {services.state_dir(profile)}")


@app.command("down")
def services_down() -> None:
    """Stop the services `services up` started for this storage root (and nothing else)."""
    stopped = services.down(state.settings().profile)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command("status")
def services_status(
    count: Annotated[bool, typer.Option(help="Count the records of every topic by consuming them.")] = True,
) -> None:
    """Show the services, and the records each topic holds (counted by consuming, not from end_offsets)."""
    profile = state.settings().profile
    rows = services.status(profile)
    table = RichTable(title="services")
    for col in ("service", "state", "pid", "address", "storage"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.name, "[green]running[/]" if r.running else "[red]stopped[/]", str(r.pid), r.address, r.storage)
    console.print(table if rows else "no embedded services recorded (start them with `lambdaflow services up`)")
    broker_up = any(r.name == "broker" and r.running for r in rows) or profile.kafka.kind == "external"
    if count and broker_up:
        bootstrap = services.client_config(profile)
        topics = RichTable(title="topics (records counted by consuming)")
        for col in ("topic", "partitions", "records"):
            topics.add_column(col, justify="right" if col != "topic" else "left")
        for topic in services.list_topics(bootstrap):
            per_partition = services.count_records(bootstrap, topic)
            topics.add_row(topic, str(len(per_partition)), f"{sum(per_partition.values()):,}")
        console.print(topics)


@app.command("restart-broker")
def services_restart_broker() -> None:
    """Restart the embedded broker on the same address (memory storage loses its records)."""
    record = services.restart_broker(state.settings().profile)
    console.print(f"[green]restarted[/] broker pid {record.pid} at {record.address}")
