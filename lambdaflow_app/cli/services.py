"""``lambdaflow services fetch|up|down|status|restart-broker``: the services the profile runs on this machine."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table as RichTable

from lambdaflow import services
from lambdaflow.services import jvm
from lambdaflow_app.cli._common import console, state

app = typer.Typer(help="Local services: the embedded broker, or the real stack (Kafka, HDFS, Spark, Trino).", no_args_is_help=True)

ProfileOption = Annotated[
    Optional[str], typer.Option("--profile", help="Profile name or file (same as the global --profile), e.g. pseudo.")
]


def _choose(profile: str | None) -> None:
    if profile is not None:
        state.choose(profile, state.pipeline, state.conf)


@app.command("fetch")
def services_fetch() -> None:
    """Fetch the real stack's jars (deploy/jvm/pom.xml) into the Maven and JVM caches; a no-op when they are there."""
    with console.status("resolving deploy/jvm/pom.xml with Maven (Kafka, Hadoop, Trino, delta-spark)…"):
        report = jvm.fetch()
    what = f"downloaded {report.downloaded_bytes / 1e6:,.0f} MB" if report.maven_ran else "already cached"
    console.print(f"[green]fetched[/] in {report.seconds:.1f}s ({what}); classpaths and Trino in {report.cache}")


@app.command("up")
def services_up(profile: ProfileOption = None) -> None:
    """Start the profile's services in order (HDFS, broker, Spark, Trino), each health-checked."""
    _choose(profile)
    settings = state.settings().profile
    status = console.status("starting…")
    with status:
        running = services.up(
            settings, on_start=lambda name: status.update(f"starting {name}…" if name != "jvm artefacts" else "fetching the JVM artefacts…")
        )
    for record in running.values():
        console.print(
            f"[green]up[/] {record.name:<12} pid {record.pid:<8} {record.address:<40} ready in {record.ready_seconds:5.1f}s  {record.storage}"
        )
    console.print(f"state and logs: {services.state_dir(settings)}")


@app.command("down")
def services_down(profile: ProfileOption = None) -> None:
    """Stop the services `services up` started for this home (and nothing else)."""
    _choose(profile)
    stopped = services.down(state.settings().profile)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command("status")
def services_status(
    profile: ProfileOption = None,
    count: Annotated[bool, typer.Option(help="Count the records of every topic by consuming them.")] = True,
) -> None:
    """Show the services, and the records each topic holds (counted by consuming, not from end_offsets)."""
    _choose(profile)
    settings = state.settings().profile
    rows = services.status(settings)
    table = RichTable(title="services")
    for col in ("service", "state", "pid", "address", "ready in", "storage"):
        table.add_column(col)
    for r in rows:
        running = "[green]running[/]" if r.running else "[red]stopped[/]"
        table.add_row(r.name, running, str(r.pid), r.address, f"{r.ready_seconds:.1f}s", r.storage)
    console.print(table if rows else "no services recorded (start them with `lambdaflow services up`)")
    broker_up = any(r.name == "broker" and r.running for r in rows) or settings.kafka.kind == "external"
    if count and broker_up:
        bootstrap = services.client_config(settings)
        topics = RichTable(title="topics (records counted by consuming)")
        for col in ("topic", "partitions", "records"):
            topics.add_column(col, justify="right" if col != "topic" else "left")
        for topic in services.list_topics(bootstrap):
            per_partition = services.count_records(bootstrap, topic)
            topics.add_row(topic, str(len(per_partition)), f"{sum(per_partition.values()):,}")
        console.print(topics)


@app.command("restart-broker")
def services_restart_broker(profile: ProfileOption = None) -> None:
    """Restart the embedded broker on the same address (Tansu's memory storage loses its records)."""
    _choose(profile)
    record = services.restart_broker(state.settings().profile)
    console.print(f"[green]restarted[/] broker pid {record.pid} at {record.address} (ready in {record.ready_seconds:.1f}s)")
