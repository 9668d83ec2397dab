"""``lambdaflow query|verify|serve|trino-ddl``: the serving layer from the command line."""

from __future__ import annotations

import sys
from typing import Annotated, Literal, Optional

import typer
from rich.table import Table as RichTable

from lambdaflow_app.cli._common import console, err, print_arrow, state

Format = Literal["table", "csv", "json"]


def query(
    sql: Annotated[str, typer.Argument(help="One SQL statement in Trino's dialect, e.g. 'SELECT * FROM unified_account_profile LIMIT 5'.")],
    engine: Annotated[Optional[str], typer.Option(help="duckdb (embedded) or trino (default: the profile's sql_engine).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
) -> None:
    """Query the tables and the unified views with SQL."""
    s = state.settings()
    chosen = engine or s.profile.sql_engine
    if fmt not in ("table", "csv", "json"):
        raise typer.BadParameter(f"unknown format {fmt!r}; use table, csv or json", param_hint="--format")
    if chosen == "trino":
        from serving_layer.trino import run_query

        result = run_query(s, sql)
    elif chosen == "duckdb":
        from serving_layer.engine import open_session

        result = open_session(s).query(sql)
    else:
        raise typer.BadParameter(f"unknown engine {chosen!r}; use duckdb or trino", param_hint="--engine")
    print_arrow(result, fmt)


def verify(
    engine: Annotated[Optional[str], typer.Option(help="Read the unified views through duckdb or trino (default: the profile's).")] = None,
) -> None:
    """Recompute every view from scratch over master/events and compare with its unified view; exit 1 on any difference."""
    from serving_layer.verify import verify as run_verify

    s = state.settings()
    chosen = engine or s.profile.sql_engine
    if chosen not in ("duckdb", "trino"):
        raise typer.BadParameter(f"unknown engine {chosen!r}; use duckdb or trino", param_hint="--engine")
    with console.status(f"recomputing every view from scratch, reading the unified views through {chosen}…"):
        if chosen == "trino":
            from serving_layer.trino import open_trino_session

            checks = run_verify(s, open_trino_session(s), millis=True)
        else:
            checks = run_verify(s)
    table = RichTable(title=f"unified views ({chosen}) vs. a from-scratch recompute")
    for col in ("view", "matching", "differing", "missing", "extra", "result"):
        table.add_column(col, justify="left" if col in ("view", "result") else "right")
    for c in checks:
        table.add_row(
            c.view, f"{c.matching:,}", str(c.differing), str(c.missing), str(c.extra), "[green]ok[/]" if c.ok else "[red]DIFFERENT[/]"
        )
    console.print(table)
    for c in checks:
        for example in c.examples:
            console.print(f"  {c.view}: {example}")
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address (default: the profile's serving.host).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default: the profile's serving.port).")] = None,
) -> None:
    """Run the REST API (OpenAPI schema at /openapi.json, docs at /docs)."""
    import uvicorn

    from serving_layer.api import create_app

    s = state.settings()
    bind = host or s.profile.serving.host
    app = create_app(s, host=bind, server=True)  # refuses a public address without a token
    uvicorn.run(app, host=bind, port=port or s.profile.serving.port, log_level="info")


def trino_ddl(
    apply: Annotated[bool, typer.Option(help="Run the statements on the profile's Trino instead of printing them.")] = False,
) -> None:
    """Print (or apply) the Trino statements: register the Delta tables, create the serving views."""
    from serving_layer.trino import apply_ddl, ddl_statements, missing_tables

    s = state.settings()
    statements = ddl_statements(s)
    missing = missing_tables(s)
    if missing:
        err.print(
            f"[yellow]views not created[/]: {len(missing)} tables they read do not exist yet ({', '.join(missing[:4])}…); run again after the first batch run"
        )
    if apply:
        apply_ddl(s, statements)
        console.print(f"[green]applied[/] {len(statements)} statements on {s.profile.trino.host}:{s.profile.trino.port}")
    else:
        sys.stdout.write(";\n\n".join(statements) + ";\n")


def register(app: typer.Typer) -> None:
    """Add the serving commands to the top-level application."""
    app.command()(query)
    app.command()(verify)
    app.command()(serve)
    app.command("trino-ddl")(trino_ddl)
