"""`lambdaflow up` / `down`: the long-running local stack.

Broker, speed layer, Airflow (API server, scheduler and DAG processor on a loopback port), the
REST API and — for a pipeline the sample generator fits — a steady sample
producer, each a recorded process under
``<storage root>/services`` so that ``down`` stops exactly those.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from lambdaflow import sample_data, services
from lambdaflow.config import Settings
from lambdaflow_app import airflow_local


@dataclass(frozen=True)
class StackInfo:
    """Where to find what ``up`` started."""

    broker: str
    api: str
    airflow: str
    airflow_login: str
    metrics: str
    producer: str
    logs: str


def _module(settings: Settings, module: str, *args: str) -> list[str]:
    """``python -m <module> --profile … --pipeline …`` with this stack's configuration."""
    config = ["--profile", str(settings.profile_path.resolve()), "--pipeline", str(settings.pipeline_path.resolve())]
    return [sys.executable, "-m", module, *config, *args]


def _cli(settings: Settings, *args: str) -> list[str]:
    return _module(settings, "lambdaflow_app", *args)


def up(settings: Settings, airflow_port: int = 8280, rate: float = 50.0) -> StackInfo:
    """Start every component not already running; returns the addresses to use."""
    profile = settings.profile
    services.up(profile)
    env, airflow_url = airflow_local.start_scheduler(settings, airflow_port)
    services.start_process(profile, "speed", _module(settings, "speed_layer"), env=env)
    api = f"http://{profile.serving.host}:{profile.serving.port}"
    services.start_process(profile, "api", _cli(settings, "serve"), env=env, address=api, port=profile.serving.port)
    missing = sample_data.missing_fields(settings.pipeline)
    if missing:  # the sample makes card transactions: it would only fill another pipeline's quarantine
        producer = f"none: the sample generator lacks {missing}; produce your own events with `lambdaflow produce --file`"
    else:
        services.start_process(profile, "producer", _cli(settings, "produce", "--follow", "--rate", str(rate)), env=env)
        producer = f"sample events at about {rate:g}/s to {settings.pipeline.source.topic}"
    login = _airflow_login(Path(env["AIRFLOW_HOME"]))
    return StackInfo(
        broker=services.bootstrap_servers(profile)[0],
        api=api,
        airflow=airflow_url,
        airflow_login=login,
        metrics=f"http://127.0.0.1:{profile.speed.metrics_port}/metrics",
        producer=producer,
        logs=str(services.state_dir(profile)),
    )


def _airflow_login(home: Path) -> str:
    generated = home / "simple_auth_manager_passwords.json.generated"
    if generated.is_file():
        users = json.loads(generated.read_text())
        return ", ".join(f"{user} / {password}" for user, password in users.items())
    return f"see {home}/simple_auth_manager_passwords.json.generated once Airflow has started"


def down(settings: Settings) -> list[str]:
    return services.down(settings.profile)
