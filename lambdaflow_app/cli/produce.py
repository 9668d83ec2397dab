"""``lambdaflow produce``: sample events with their late labels, a replayed file, or a steady live stream."""

from __future__ import annotations

import datetime as dt
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lambdaflow import producer, sample_data, services
from lambdaflow.config import Settings
from lambdaflow_app.cli._common import console, state


def _sample_fits(s: Settings, flag: str) -> None:
    missing = sample_data.missing_fields(s.pipeline)
    if missing:
        raise typer.BadParameter(
            f"the sample generator makes card transactions; pipeline {s.pipeline.name!r} also needs {missing}: replay your data with --file",
            param_hint=flag,
        )


def _first_time(start: str | None) -> dt.datetime:
    if start == "now":
        return dt.datetime.now(dt.timezone.utc)
    if start:
        try:
            return dt.datetime.fromisoformat(start).astimezone(dt.timezone.utc)
        except ValueError:
            raise typer.BadParameter(f"expected an ISO time or 'now', found {start!r}", param_hint="--start") from None
    return sample_data.DEFAULT_START


def produce(
    events: Annotated[int, typer.Option(help="Number of sample events to generate.")] = 100_000,
    days: Annotated[float, typer.Option(help="Simulated period of the sample, in days.")] = 30.0,
    seed: Annotated[int, typer.Option(help="Seed of the sample generator.")] = 7,
    file: Annotated[Optional[Path], typer.Option(help="Replay this CSV/Parquet/JSONL file instead of generating.")] = None,
    topic: Annotated[Optional[str], typer.Option(help="Target topic (default: the pipeline's source topic).")] = None,
    labels: Annotated[bool, typer.Option(help="Also send the sample's labels to the label topic.")] = True,
    rate: Annotated[Optional[float], typer.Option(help="Records per second to stay under (default: as fast as possible).")] = None,
    start: Annotated[Optional[str], typer.Option(help="First sample event time: ISO time or 'now' (default: 2026-01-01).")] = None,
    follow: Annotated[bool, typer.Option(help="Keep producing fresh sample events at --rate (default 50/s) until interrupted.")] = False,
) -> None:
    """Send sample events (and their late labels), or replay a file, keyed by the partition key."""
    s = state.settings()
    bootstrap = services.bootstrap_servers(s.profile)
    target = topic or s.pipeline.source.topic
    if follow:
        _sample_fits(s, "--follow")
        _produce_forever(s, bootstrap, target, labels, rate or 50.0, seed)
        return
    if file is not None:
        rows = producer.in_time_order(producer.read_file(file), s.pipeline.events.time_column)
        streams = producer.pipeline_streams(s.pipeline, rows, topic=target)
    else:
        _sample_fits(s, "--events")
        with console.status(f"generating {events:,} events over {days:g} days…"):
            sample = sample_data.generate(events, days, seed, start=_first_time(start))
        console.print(f"generated {events:,} events, positive rate {sample.fraud_rate:.2%}, {sample.labels.num_rows:,} labels")
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
