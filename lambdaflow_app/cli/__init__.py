"""``lambdaflow``: the front door to every capability, one module per command group.

Global options choose the configuration: ``--profile`` (or ``LAMBDAFLOW_PROFILE``),
``--pipeline`` (or ``LAMBDAFLOW_PIPELINE``) and ``--conf`` (or ``LAMBDAFLOW_CONF``).
An expected failure (any :class:`lambdaflow.errors.LambdaflowError`) ends the
command with one readable line on stderr and the error's exit code; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from lambdaflow.errors import LambdaflowError
from lambdaflow_app.cli import batch, config, ops, produce, services, serving, speed, tables
from lambdaflow_app.cli._common import err, state

__all__ = ["app", "main"]

app = typer.Typer(
    help="Lambdaflow: a Lambda-architecture ML data system.", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False
)
app.add_typer(config.app, name="config")
app.add_typer(services.app, name="services")
app.add_typer(tables.app, name="tables")
app.add_typer(speed.app, name="speed")
app.add_typer(batch.app, name="batch")
app.command()(produce.produce)
serving.register(app)
ops.register(app)


@app.callback()
def _global(
    profile: Annotated[Optional[str], typer.Option(help="Profile name or YAML path (default: $LAMBDAFLOW_PROFILE or 'local').")] = None,
    pipeline: Annotated[Optional[Path], typer.Option(help="Pipeline YAML (default: $LAMBDAFLOW_PIPELINE or conf/pipeline.yaml).")] = None,
    conf: Annotated[Optional[Path], typer.Option(help="Configuration directory (default: $LAMBDAFLOW_CONF or ./conf).")] = None,
) -> None:
    state.choose(profile, pipeline, conf)


def main() -> None:
    """Console entry point: expected failures become one clear line and an exit code, not a traceback."""
    try:
        app()
    except LambdaflowError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        if "pyspark.sql" in sys.modules:  # a Spark command failed: stop Spark, leave without teardown aborts
            from lambdaflow.spark import finish

            finish(exc.exit_code)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
