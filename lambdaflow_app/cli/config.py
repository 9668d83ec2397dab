"""``lambdaflow config check|show``."""

from __future__ import annotations

import json
from typing import Any

import typer

from lambdaflow.config.common import is_secret
from lambdaflow_app.cli._common import console, state

app = typer.Typer(help="Inspect and validate configuration.", no_args_is_help=True)


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("***" if v and is_secret(k) else _mask(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


@app.command("check")
def config_check() -> None:
    """Validate the pipeline and the profile; print a summary."""
    s = state.settings()
    console.print(
        f"[green]ok[/] pipeline [bold]{s.pipeline.name}[/] ({s.pipeline_path}) on profile [bold]{s.profile_name}[/] ({s.profile_path})"
    )
    console.print(f"  storage root: {s.profile.storage.uri}")
    console.print(f"  views: {', '.join(v.name for v in s.pipeline.views) or 'none'}; features: {len(s.pipeline.features)}")


@app.command("show")
def config_show() -> None:
    """Print the effective configuration (defaults filled in) as JSON, secrets masked."""
    s = state.settings()
    shown = {"pipeline": s.pipeline.model_dump(by_alias=True), "profile": _mask(s.profile.model_dump(by_alias=True))}
    console.print_json(json.dumps(shown, default=str))
