"""What every command group shares: the chosen configuration, the consoles, table printing, starting Spark."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table as RichTable

from lambdaflow.config import Settings, load_settings

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

console = Console()
err = Console(stderr=True)


class CliState:
    """The global options (``--profile``, ``--pipeline``, ``--conf``) and the settings loaded from them, once."""

    def __init__(self) -> None:
        self.profile: str | None = None
        self.pipeline: Path | None = None
        self.conf: Path | None = None
        self._settings: Settings | None = None

    def choose(self, profile: str | None, pipeline: Path | None, conf: Path | None) -> None:
        self.profile, self.pipeline, self.conf = profile, pipeline, conf
        self._settings = None

    def settings(self) -> Settings:
        """The pipeline and profile of this invocation.

        Raises:
            ConfigError: a file is missing or invalid.
        """
        if self._settings is None:
            self._settings = load_settings(self.profile, self.pipeline, self.conf)
        return self._settings


state = CliState()


def print_arrow(result: pa.Table, fmt: str = "table", title: str | None = None, limit: int = 1000) -> None:
    """Print an Arrow table as a rich table, CSV or JSON (on stdout)."""
    if fmt == "json":
        console.print_json(json.dumps(result.to_pylist(), default=str))
    elif fmt == "csv":
        import io

        import pyarrow.csv as pcsv

        buffer = io.BytesIO()
        pcsv.write_csv(result, buffer)
        sys.stdout.write(buffer.getvalue().decode())
    else:
        table = RichTable(title=title, show_lines=False)
        for name in result.column_names:
            table.add_column(name)
        for row in result.to_pylist()[:limit]:
            table.add_row(*[f"{v:.6g}" if isinstance(v, float) else str(v) for v in row.values()])
        console.print(table)
        if title is None:
            console.print(f"[dim]{result.num_rows:,} row(s)[/]")


def start_spark(app_name: str, master: str | None) -> SparkSession:
    """A Spark session on the profile's master (or ``master``), with a status line while it starts."""
    from lambdaflow.spark import get_spark

    with console.status("starting Spark…"):
        return get_spark(state.settings().profile.spark, app_name=app_name, master=master)


def metrics_table(title: str, rows: dict[str, Any]) -> RichTable:
    """A two-column table of labels and values."""
    table = RichTable(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows.items():
        table.add_row(label, str(value))
    return table
