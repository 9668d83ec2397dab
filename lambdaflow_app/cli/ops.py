"""``lambdaflow up|down|demo|maintain|health|airflow``: running and operating the whole system."""

from __future__ import annotations

import json
import subprocess
from typing import Annotated

import typer

from lambdaflow_app.cli._common import console, metrics_table, state


def up(
    airflow_port: Annotated[int, typer.Option(help="Loopback port of the Airflow UI.")] = 8280,
    rate: Annotated[float, typer.Option(help="Sample events per second of the steady producer (sample pipeline only).")] = 50.0,
) -> None:
    """Start the local stack: broker, speed layer, Airflow (UI), REST API and, for the sample pipeline, a steady producer."""
    from lambdaflow_app import stack

    with console.status("starting the local stack (Airflow takes a minute)…"):
        info = stack.up(state.settings(), airflow_port, rate)
    rows = {
        "Kafka broker": info.broker,
        "REST API": f"{info.api}/docs",
        "Airflow UI": info.airflow,
        "Airflow login": info.airflow_login,
        "speed metrics": info.metrics,
        "producer": info.producer,
        "logs": info.logs,
    }
    console.print(metrics_table("Lambdaflow is up", rows))
    console.print("stop everything with [bold]lambdaflow down[/]")


def down() -> None:
    """Stop exactly the processes `lambdaflow up` (or `services up`) started."""
    from lambdaflow_app import stack

    stopped = stack.down(state.settings())
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


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


def health() -> None:
    """Speed-layer health against the profile's thresholds; exit 1 when one is crossed."""
    from lambdaflow.health import check

    report = check(state.settings())
    console.print_json(json.dumps(report.as_dict(), default=str))
    if report.problems:
        raise typer.Exit(1)


def demo(
    events: Annotated[int, typer.Option(help="Sample events of history to generate.")] = 300_000,
    days: Annotated[float, typer.Option(help="Simulated days of history.")] = 30.0,
    live_events: Annotated[int, typer.Option(help="Fresh events streamed after the batch cycle.")] = 20_000,
    keep_services: Annotated[bool, typer.Option(help="Leave the broker running afterwards.")] = False,
) -> None:
    """Run the whole Lambda loop on the embedded default, with progress and a final report."""
    from lambdaflow_app import demo as demo_module

    ok = demo_module.run(state.settings(), events=events, days=days, live_events=live_events, keep_services=keep_services)
    raise typer.Exit(0 if ok else 1)


def airflow(ctx: typer.Context) -> None:
    """Run an `airflow …` command with this project's Airflow environment (home, DAG folder, profile), e.g. `lambdaflow airflow dags list`."""
    from lambdaflow_app import airflow_local

    env = airflow_local.airflow_env(state.settings())
    airflow_local.migrate(env)  # a fresh home needs its metadata DB before any command
    raise typer.Exit(subprocess.call([airflow_local.airflow_bin(), *ctx.args], env=env))


def register(app: typer.Typer) -> None:
    """Add the operations commands to the top-level application."""
    app.command()(up)
    app.command()(down)
    app.command()(maintain)
    app.command()(health)
    app.command()(demo)
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})(airflow)
