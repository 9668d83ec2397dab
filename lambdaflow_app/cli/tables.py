"""``lambdaflow tables list|history``: the Delta tables under the storage root."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table as RichTable

from lambdaflow.contracts.paths import existing_tables, table_uri
from lambdaflow.tables import Table
from lambdaflow_app.cli._common import console, state

app = typer.Typer(help="Inspect Delta tables.", no_args_is_help=True)


@app.command("list")
def tables_list() -> None:
    """List the Delta tables under the storage root with their version and size."""
    s = state.settings()
    out = RichTable(title=f"tables under {s.profile.storage.uri}")
    for col in ("table", "version", "files", "records"):
        out.add_column(col, justify="left" if col == "table" else "right")
    for name, uri in existing_tables(s.profile):
        snap = Table(uri).snapshot()
        out.add_row(name, str(snap.version), str(len(snap.files)), f"{snap.num_records:,}")
    console.print(out)


@app.command("history")
def tables_history(
    name: Annotated[str, typer.Argument(help="Table name relative to the storage root, e.g. master/events.")],
    limit: Annotated[int, typer.Option(help="Newest commits to show.")] = 10,
) -> None:
    """Show a table's commits, newest first, with their custom metadata."""
    table = Table(table_uri(state.settings().profile, name))
    for commit in table.history(limit):
        console.print_json(json.dumps(commit, default=str))
