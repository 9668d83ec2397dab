"""``lambdaflow``: the front door to every capability.

Global options choose the configuration: ``--profile`` (or ``LAMBDAFLOW_PROFILE``),
``--pipeline`` (or ``LAMBDAFLOW_PIPELINE``) and ``--conf`` (or ``LAMBDAFLOW_CONF``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table as RichTable

from lambdaflow import paths
from lambdaflow.config import ConfigError, Settings, load_settings

app = typer.Typer(help="Lambdaflow: a Lambda-architecture ML data system.", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
services_app = typer.Typer(help="Embedded services (Kafka-compatible broker, moto S3).", no_args_is_help=True)
config_app = typer.Typer(help="Inspect and validate configuration.", no_args_is_help=True)
tables_app = typer.Typer(help="Inspect Delta tables.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(config_app, name="config")
app.add_typer(tables_app, name="tables")
speed_app = typer.Typer(help="The speed layer: Kafka micro-batches into Delta, exactly once.", no_args_is_help=True)
app.add_typer(speed_app, name="speed")
batch_app = typer.Typer(help="The batch layer: Spark jobs over the master dataset.", no_args_is_help=True)
app.add_typer(batch_app, name="batch")

console = Console()
err = Console(stderr=True)


class _State:
    profile: str | None = None
    pipeline: Path | None = None
    conf: Path | None = None
    _settings: Settings | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.profile, self.pipeline, self.conf)
        return self._settings


state = _State()


@app.callback()
def _global(
    profile: Annotated[Optional[str], typer.Option(help="Profile name or YAML path (default: $LAMBDAFLOW_PROFILE or 'local').")] = None,
    pipeline: Annotated[Optional[Path], typer.Option(help="Pipeline YAML (default: $LAMBDAFLOW_PIPELINE or conf/pipeline.yaml).")] = None,
    conf: Annotated[Optional[Path], typer.Option(help="Configuration directory (default: $LAMBDAFLOW_CONF or ./conf).")] = None,
) -> None:
    state.profile, state.pipeline, state.conf = profile, pipeline, conf
    state._settings = None


# --------------------------------------------------------------------------- config


@config_app.command("check")
def config_check() -> None:
    """Validate the pipeline and the profile; print a summary."""
    s = state.settings()
    console.print(f"[green]ok[/] pipeline [bold]{s.pipeline.name}[/] ({s.pipeline_path}) on profile [bold]{s.profile_name}[/] ({s.profile_path})")
    console.print(f"  storage root: {s.profile.storage.uri}")
    console.print(f"  views: {', '.join(v.name for v in s.pipeline.views) or 'none'}; features: {len(s.pipeline.features)}")


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration (defaults filled in) as JSON."""
    s = state.settings()
    console.print_json(json.dumps({"pipeline": s.pipeline.model_dump(by_alias=True), "profile": s.profile.model_dump(by_alias=True)}, default=str))


# --------------------------------------------------------------------------- services


@services_app.command("up")
def services_up() -> None:
    """Start the embedded broker (and moto for s3 storage); wait until it answers."""
    from lambdaflow import services

    profile = state.settings().profile
    with console.status("starting the embedded broker…"):
        running = services.up(profile)
    for record in running.values():
        console.print(f"[green]up[/] {record.name:<7} pid {record.pid:<8} {record.address}  {record.storage}")
    console.print(f"state: {services.state_dir(profile)}")


@services_app.command("down")
def services_down() -> None:
    """Stop the services `services up` started for this storage root (and nothing else)."""
    from lambdaflow import services

    stopped = services.down(state.settings().profile)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@services_app.command("status")
def services_status(
    count: Annotated[bool, typer.Option(help="Count the records of every topic by consuming them.")] = True,
) -> None:
    """Show the services, and the records each topic holds (counted by consuming, not from end_offsets)."""
    from lambdaflow import services

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
        bootstrap = services.bootstrap_servers(profile)
        topics = RichTable(title="topics (records counted by consuming)")
        for col in ("topic", "partitions", "records"):
            topics.add_column(col, justify="right" if col != "topic" else "left")
        for topic in services.list_topics(bootstrap):
            per_partition = services.count_records(bootstrap, topic)
            topics.add_row(topic, str(len(per_partition)), f"{sum(per_partition.values()):,}")
        console.print(topics)


@services_app.command("restart-broker")
def services_restart_broker() -> None:
    """Restart the embedded broker on the same address (memory storage loses its records)."""
    from lambdaflow import services

    record = services.restart_broker(state.settings().profile)
    console.print(f"[green]restarted[/] broker pid {record.pid} at {record.address}")


# --------------------------------------------------------------------------- produce


@app.command()
def produce(
    events: Annotated[int, typer.Option(help="Number of sample events to generate.")] = 100_000,
    days: Annotated[float, typer.Option(help="Simulated period of the sample, in days.")] = 30.0,
    seed: Annotated[int, typer.Option(help="Seed of the sample generator.")] = 7,
    file: Annotated[Optional[Path], typer.Option(help="Replay this CSV/Parquet/JSONL file instead of generating.")] = None,
    topic: Annotated[Optional[str], typer.Option(help="Target topic (default: the pipeline's source topic).")] = None,
    labels: Annotated[bool, typer.Option(help="Also send the sample's chargebacks to the label topic.")] = True,
    rate: Annotated[Optional[float], typer.Option(help="Records per second to stay under (default: as fast as possible).")] = None,
    start: Annotated[Optional[str], typer.Option(help="First sample event time: ISO time or 'now' (default: 2026-01-01).")] = None,
    follow: Annotated[bool, typer.Option(help="Keep producing fresh events at --rate (default 50/s) until interrupted.")] = False,
) -> None:
    """Send sample events (and their late chargebacks), or replay a file, keyed by the partition key."""
    from lambdaflow import producer, sample_data, services

    s = state.settings()
    events_spec = s.pipeline.events
    bootstrap = services.bootstrap_servers(s.profile)
    target = topic or s.pipeline.source.topic
    if follow:
        _produce_forever(s, bootstrap, target, labels, rate or 50.0, seed)
        return
    if file is not None:
        rows = producer.in_time_order(producer.read_file(file), events_spec.time_column)
        streams = producer.pipeline_streams(s.pipeline, rows, topic=target)
    else:
        missing = set(events_spec.fields) - set(sample_data.EVENT_SCHEMA.names)
        if missing:
            raise typer.BadParameter(
                f"the sample generator makes card transactions; this pipeline's events also need {sorted(missing)}: "
                "replay your data with --file", param_hint="--events"
            )
        import datetime as dt

        first = sample_data.DEFAULT_START
        if start == "now":
            first = dt.datetime.now(dt.timezone.utc)
        elif start:
            first = dt.datetime.fromisoformat(start).astimezone(dt.timezone.utc)
        with console.status(f"generating {events:,} events over {days:g} days…"):
            sample = sample_data.generate(events, days, seed, start=first)
        console.print(f"generated {events:,} events, fraud rate {sample.fraud_rate:.2%}, {sample.labels.num_rows:,} chargebacks")
        streams = producer.pipeline_streams(s.pipeline, sample.events, sample.labels if labels else None, topic=target)
    for stream in streams:
        services.ensure_topic(bootstrap, stream.topic, s.pipeline.source.partitions)
    total = sum(st.rows.num_rows for st in streams)
    with Progress(TextColumn("producing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("produce", total=total)
        report = producer.produce(bootstrap, streams, rate=rate, on_progress=lambda n: bar.advance(task, n))
    for name, n in report.sent.items():
        console.print(f"[green]sent[/] {n:,} records to [bold]{name}[/]")
    console.print(f"{report.total:,} records acknowledged in {report.seconds:.1f}s ({report.total / max(report.seconds, 1e-9):,.0f}/s)")


def _produce_forever(s: Settings, bootstrap: list[str], target: str, labels: bool, rate: float, seed: int) -> None:
    import datetime as dt
    import signal

    from lambdaflow import producer, sample_data, services

    services.ensure_topic(bootstrap, target, s.pipeline.source.partitions)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))

    def slice_of(n: int, start: dt.datetime, chunk: int) -> list[producer.Stream]:
        sample = sample_data.generate(n, days=10 / 86400, seed=seed + chunk, start=start, accounts=2000)
        return producer.pipeline_streams(s.pipeline, sample.events, sample.labels if labels else None, topic=target)

    console.print(f"producing about {rate:g} fresh events per second to {target} (Ctrl-C to stop)")
    try:
        sent = producer.produce_live(bootstrap, slice_of, rate, should_stop=lambda: stop["now"])
    except KeyboardInterrupt:
        sent = None
    console.print(f"stopped{'' if sent is None else f' after {sent:,} records'}")


# --------------------------------------------------------------------------- tables


@tables_app.command("list")
def tables_list() -> None:
    """List the Delta tables under the storage root with their version and size."""
    from lambdaflow.tables import Table

    s = state.settings()
    out = RichTable(title=f"tables under {s.profile.storage.uri}")
    for col in ("table", "version", "files", "records"):
        out.add_column(col, justify="left" if col == "table" else "right")
    for name, uri in paths.existing_tables(s.profile):
        snap = Table(uri).snapshot()
        out.add_row(name, str(snap.version), str(len(snap.files)), f"{snap.num_records:,}")
    console.print(out)


@tables_app.command("history")
def tables_history(
    name: Annotated[str, typer.Argument(help="Table name relative to the storage root, e.g. master/events.")],
    limit: Annotated[int, typer.Option(help="Newest commits to show.")] = 10,
) -> None:
    """Show a table's commits, newest first, with their custom metadata."""
    from lambdaflow.tables import Table

    table = Table(paths.table_uri(state.settings().profile, name))
    for commit in table.history(limit):
        console.print_json(json.dumps(commit, default=str))


@speed_app.command("run")
def speed_run(
    max_batches: Annotated[Optional[int], typer.Option(help="Stop after this many micro-batches.")] = None,
    idle_exit: Annotated[Optional[float], typer.Option(help="Stop after this many seconds without records.")] = None,
) -> None:
    """Consume, validate, append, score and aggregate until SIGTERM/SIGINT (structured logs on stderr)."""
    from speed_layer.runner import main as run

    raise typer.Exit(run(state.settings(), max_batches, idle_exit))


@batch_app.command("views")
def batch_views(
    master_version: Annotated[Optional[int], typer.Option(help="Delta version of master/events to read (default: latest).")] = None,
    view: Annotated[Optional[list[str]], typer.Option(help="Only this view (repeatable).")] = None,
    force: Annotated[bool, typer.Option(help="Recompute even if this snapshot was already computed.")] = False,
    spark_master: Annotated[Optional[str], typer.Option("--master", help="Spark master (default: the profile's).")] = None,
) -> None:
    """Recompute every batch view from one snapshot of master/events (same job as spark-submit runs)."""
    from batch_layer.views import recompute_views
    from lambdaflow.spark import get_spark

    s = state.settings()
    with console.status("starting Spark…"):
        spark = get_spark(s.profile.spark, app_name="lambdaflow-batch-views", master=spark_master)
    with console.status("recomputing batch views…"):
        report = recompute_views(s, spark, master_version, view, force)
    table = RichTable(title=f"batch views at master v{report.master_version}, watermark W={report.watermark}")
    for col in ("view", "table version", "rows", "state"):
        table.add_column(col)
    for name, r in report.views.items():
        table.add_row(name, str(r.table_version), f"{r.rows:,}", "skipped (already computed)" if r.skipped else "published")
    console.print(table)
    console.print(f"{report.events:,} events ({report.duplicates_removed:,} duplicate deliveries removed) in {report.seconds:.1f}s")


@batch_app.command("expire")
def batch_expire() -> None:
    """Drop speed partials already absorbed by the previous batch run (safe while readers and the speed layer run)."""
    from batch_layer.views import expire_speed_rows

    for view, through in expire_speed_rows(state.settings()).items():
        console.print(f"{view}: " + (f"expired speed rows through micro-batch {through}" if through >= 0 else "nothing to expire yet"))


@batch_app.command("training-set")
def batch_training_set(
    master_version: Annotated[Optional[int], typer.Option(help="Delta version of master/events to read (default: latest).")] = None,
    cutoff: Annotated[Optional[str], typer.Option(help="What is known: ISO time (default: the latest event time).")] = None,
    spark_master: Annotated[Optional[str], typer.Option("--master", help="Spark master (default: the profile's).")] = None,
) -> None:
    """Build the point-in-time training set (features as the speed layer saw them, labels known at the cut-off)."""
    import datetime as dt

    from batch_layer.training import build_training_set
    from lambdaflow.spark import get_spark

    s = state.settings()
    when = dt.datetime.fromisoformat(cutoff).astimezone(dt.timezone.utc) if cutoff else None
    with console.status("starting Spark…"):
        spark = get_spark(s.profile.spark, app_name="lambdaflow-training-set", master=spark_master)
    with console.status("building the training set…"):
        report = build_training_set(s, spark, master_version, when)
    console.print(
        f"[green]training set[/] v{report.table_version}: {report.rows:,} events, {report.positives:,} positive "
        f"({report.positives / max(report.rows, 1):.2%}), cut-off {report.cutoff}, watermark W={report.watermark}, {report.seconds:.1f}s"
    )


@batch_app.command("train")
def batch_train(
    spark_master: Annotated[Optional[str], typer.Option("--master", help="Spark master (default: the profile's).")] = None,
    shuffle_labels: Annotated[bool, typer.Option(help="Train on random labels: a deliberately worse model.")] = False,
) -> None:
    """Train XGBoost on the training set, evaluate on a time-based holdout, register, promote if better."""
    from batch_layer.train import train
    from lambdaflow.spark import get_spark

    s = state.settings()
    with console.status("starting Spark…"):
        spark = get_spark(s.profile.spark, app_name="lambdaflow-train", master=spark_master)
    with console.status("training…"):
        report = train(s, spark, shuffle_labels=shuffle_labels)
    table = RichTable(title=f"model v{report.version} on {report.holdout_rows:,} holdout events (fraud rate {report.fraud_rate:.2%})")
    table.add_column("metric")
    for col in ("new model", "champion", "baseline"):
        table.add_column(col, justify="right")
    for name, value in report.metrics.items():
        champ = report.champion_metrics.get(name) if report.champion_metrics else None
        table.add_row(name, f"{value:.4f}", "—" if champ is None else f"{champ:.4f}", f"{report.baseline_metrics[name]:.4f}")
    console.print(table)
    console.print(("[green]promoted[/] " if report.promoted else "[yellow]not promoted[/] ") + report.reason)
    console.print(f"plot: {report.plot}   MLflow run: {report.run_id}   ({report.train_rows:,} training events, {report.seconds:.1f}s)")


@app.command()
def up(
    airflow_port: Annotated[int, typer.Option(help="Loopback port of the Airflow UI.")] = 8280,
    rate: Annotated[float, typer.Option(help="Sample events per second of the steady producer.")] = 50.0,
) -> None:
    """Start the local stack: broker, speed layer, Airflow (UI), REST API and a steady sample producer."""
    from lambdaflow import stack

    with console.status("starting the local stack (Airflow takes a minute)…"):
        info = stack.up(state.settings(), airflow_port, rate)
    table = RichTable(title="Lambdaflow is up", show_header=False)
    for label, value in (("Kafka broker", info.broker), ("REST API", f"{info.api}/docs"), ("Airflow UI", info.airflow),
                         ("Airflow login", info.airflow_login), ("speed metrics", info.metrics), ("logs", info.logs)):
        table.add_row(label, value)
    console.print(table)
    console.print("stop everything with [bold]lambdaflow down[/]")


@app.command()
def down() -> None:
    """Stop exactly the processes `lambdaflow up` (or `services up`) started."""
    from lambdaflow import stack

    stopped = stack.down(state.settings())
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command()
def maintain(
    retention_hours: Annotated[int, typer.Option(help="Keep files needed by versions newer than this (vacuum).")] = 168,
    compact: Annotated[bool, typer.Option(help="Merge small files first.")] = True,
) -> None:
    """Compact, checkpoint and vacuum every table (safe while the speed layer runs)."""
    from batch_layer.cycle import maintain as run_maintain

    if retention_hours < 1:
        raise typer.BadParameter("readers may still use files of recent versions: keep at least 1 hour", param_hint="--retention-hours")
    for name, result in run_maintain(state.settings(), retention_hours, compact).items():
        console.print(f"{name:<30} {result}")


@app.command()
def health() -> None:
    """Speed-layer health against the profile's thresholds; exit 1 when one is crossed."""
    from speed_layer.health import check

    report = check(state.settings())
    console.print_json(json.dumps(report.as_dict(), default=str))
    if report.problems:
        raise typer.Exit(1)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="One SQL statement in Trino's dialect, e.g. 'SELECT * FROM unified_account_profile LIMIT 5'.")],
    engine: Annotated[Optional[str], typer.Option(help="duckdb (embedded) or trino (default: the profile's sql_engine).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
) -> None:
    """Query the tables and the unified views with SQL."""
    from serving_layer.engine import QueryError, open_session

    s = state.settings()
    chosen = engine or s.profile.sql_engine
    if chosen == "trino":
        from serving_layer.trino import run_query

        result = run_query(s, sql)
    elif chosen == "duckdb":
        try:
            result = open_session(s).query(sql)
        except QueryError as exc:
            err.print(f"[red]query failed:[/] {exc}", highlight=False)
            raise typer.Exit(1) from None
    else:
        raise typer.BadParameter(f"unknown engine {chosen!r}; use duckdb or trino", param_hint="--engine")
    _print_arrow(result, fmt)


def _print_arrow(result, fmt: str) -> None:
    if fmt == "json":
        console.print_json(json.dumps(result.to_pylist(), default=str))
    elif fmt == "csv":
        import io

        import pyarrow.csv as pcsv

        buffer = io.BytesIO()
        pcsv.write_csv(result, buffer)
        sys.stdout.write(buffer.getvalue().decode())
    else:
        table = RichTable(show_lines=False)
        for name in result.column_names:
            table.add_column(name)
        for row in result.to_pylist()[:1000]:
            table.add_row(*[f"{v:.6g}" if isinstance(v, float) else str(v) for v in row.values()])
        console.print(table)
        console.print(f"[dim]{result.num_rows:,} row(s)[/]")


@app.command()
def verify() -> None:
    """Recompute every view from scratch over master/events and compare with its unified view; exit 1 on any difference."""
    from serving_layer.verify import verify as run_verify

    with console.status("recomputing every view from scratch…"):
        checks = run_verify(state.settings())
    table = RichTable(title="unified views vs. a from-scratch recompute")
    for col in ("view", "matching", "differing", "missing", "extra", "result"):
        table.add_column(col, justify="left" if col in ("view", "result") else "right")
    for c in checks:
        table.add_row(c.view, f"{c.matching:,}", str(c.differing), str(c.missing), str(c.extra), "[green]ok[/]" if c.ok else "[red]DIFFERENT[/]")
    console.print(table)
    for c in checks:
        for example in c.examples:
            console.print(f"  {c.view}: {example}")
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address (default: the profile's serving.host).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default: the profile's serving.port).")] = None,
) -> None:
    """Run the REST API (OpenAPI schema at /openapi.json, docs at /docs)."""
    import uvicorn

    from serving_layer.api import create_app

    s = state.settings()
    uvicorn.run(create_app(s), host=host or s.profile.serving.host, port=port or s.profile.serving.port, log_level="info")


@app.command("trino-ddl")
def trino_ddl(
    apply: Annotated[bool, typer.Option(help="Run the statements on the profile's Trino instead of printing them.")] = False,
) -> None:
    """Print (or apply) the Trino statements: register the Delta tables, create the serving views."""
    from serving_layer.trino import apply_ddl, ddl_statements

    s = state.settings()
    statements = ddl_statements(s)
    if apply:
        apply_ddl(s, statements)
        console.print(f"[green]applied[/] {len(statements)} statements on {s.profile.trino.host}:{s.profile.trino.port}")
    else:
        sys.stdout.write(";\n\n".join(statements) + ";\n")


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="Sample events of history to generate.")] = 300_000,
    days: Annotated[float, typer.Option(help="Simulated days of history.")] = 30.0,
    live_events: Annotated[int, typer.Option(help="Fresh events streamed after the batch cycle.")] = 20_000,
    keep_services: Annotated[bool, typer.Option(help="Leave the broker running afterwards.")] = False,
) -> None:
    """Run the whole Lambda loop on the embedded default, with progress and a final report."""
    from lambdaflow import demo as demo_module

    ok = demo_module.run(state.settings(), events=events, days=days, live_events=live_events, keep_services=keep_services)
    raise typer.Exit(0 if ok else 1)


def main() -> None:
    """Console entry point: configuration and service errors become one clear line, not a traceback."""
    from lambdaflow.services import ServiceError
    from lambdaflow.tables import TableError

    try:
        app()
    except (ConfigError, ServiceError, TableError) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
