"""``lambdaflow speed run``: the speed layer (``python -m speed_layer`` takes the same flags)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lambdaflow.spark import finish
from lambdaflow_app.cli._common import state

app = typer.Typer(help="The speed layer: Kafka micro-batches into Delta, exactly once.", no_args_is_help=True)


@app.command("run")
def speed_run(
    max_batches: Annotated[Optional[int], typer.Option(help="Stop after this many micro-batches.")] = None,
    idle_exit: Annotated[Optional[float], typer.Option(help="Stop after this many seconds without records.")] = None,
) -> None:
    """Consume, validate, append, score and aggregate until SIGTERM/SIGINT (structured logs on stderr)."""
    from speed_layer.runner import main as run

    finish(run(state.settings(), max_batches, idle_exit))
