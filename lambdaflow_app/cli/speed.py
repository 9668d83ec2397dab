"""``lambdaflow speed run``: the speed layer (``python -m speed_layer`` takes the same flags)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lambdaflow.spark import finish
from lambdaflow_app.cli._common import console, state

app = typer.Typer(help="The speed layer: Kafka micro-batches into Delta, exactly once.", no_args_is_help=True)


@app.command("run")
def speed_run(
    max_batches: Annotated[Optional[int], typer.Option(help="Stop after this many micro-batches.")] = None,
    idle_exit: Annotated[Optional[float], typer.Option(help="Stop after this many seconds without records.")] = None,
    instance: Annotated[
        Optional[int], typer.Option(help="This instance's identity, 0 .. speed.instances-1 (default: the profile's speed.instance).")
    ] = None,
) -> None:
    """Consume, validate, append, score and aggregate until SIGTERM/SIGINT (structured logs on stderr).

    Run one process per instance identity; the consumer group spreads the partitions over them.
    """
    from lambdaflow.config import for_instance
    from speed_layer.runner import main as run

    finish(run(for_instance(state.settings(), instance), max_batches, idle_exit))


@app.command("acknowledge-gap")
def acknowledge_gap(
    topic: Annotated[str, typer.Option(help="The topic whose log does not continue.")],
    partition: Annotated[int, typer.Option(help="The partition.")],
    reason: Annotated[str, typer.Option(help="Why the records are accepted as lost (recorded with the gap).")],
) -> None:
    """Accept a gap in a partition's log as lost: recorded in the offset_gaps table, the speed layer then continues past it."""
    import getpass

    from speed_layer.runner import acknowledge_gap as record

    gap = record(state.settings(), topic, partition, reason, getpass.getuser())
    console.print(f"[yellow]acknowledged[/] {gap.describe()}; the speed layer continues at offset {gap.log_start}")
