"""``lambdaflow produce``: sample events with their late labels, a replayed file, or a steady live stream."""

from __future__ import annotations

import datetime as dt
import signal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lambdaflow import producer, sample_data, services
from lambdaflow.config import Settings
from lambdaflow.replay import BadLine, FileReader, ReadReport, TimeSorted
from lambdaflow_app.cli._common import console, err, state


class ReplayStream(StrEnum):
    """The stream of the pipeline a replayed file belongs to."""

    events = "events"
    labels = "labels"


def _sample_fits(s: Settings, flag: str) -> None:
    missing = sample_data.missing_fields(s.pipeline)
    if missing:
        raise typer.BadParameter(
            f"the sample generator makes card transactions; pipeline {s.pipeline.name!r} also needs {missing}: replay your data with --file",
            param_hint=flag,
        )


def _first_time(start: str | None) -> dt.datetime | None:
    if start == "now":
        return dt.datetime.now(dt.timezone.utc)
    if start:
        try:
            return dt.datetime.fromisoformat(start).astimezone(dt.timezone.utc)
        except ValueError:
            raise typer.BadParameter(f"expected an ISO time or 'now', found {start!r}", param_hint="--start") from None
    return None  # the generator's default: history ending two days before today


def produce(
    events: Annotated[int, typer.Option(help="Number of sample events to generate.")] = 100_000,
    days: Annotated[float, typer.Option(help="Simulated period of the sample, in days.")] = 30.0,
    seed: Annotated[int, typer.Option(help="Seed of the sample generator.")] = 7,
    file: Annotated[
        Optional[Path],
        typer.Option(help="Replay this CSV/Parquet/JSONL file instead of generating: typed as declared, sent in time order."),
    ] = None,
    stream: Annotated[
        ReplayStream,
        typer.Option(help="With --file: the stream the file holds; its declared fields, time column and topic are used."),
    ] = ReplayStream.events,
    topic: Annotated[
        Optional[str], typer.Option(help="Target topic (default: the pipeline's source topic, or its label topic with --stream labels).")
    ] = None,
    labels: Annotated[
        bool, typer.Option(help="Also send the sample's labels to the label topic (a labels file: --file with --stream labels).")
    ] = True,
    rate: Annotated[Optional[float], typer.Option(help="Records per second to stay under (default: as fast as possible).")] = None,
    start: Annotated[
        Optional[str], typer.Option(help="First sample event time: ISO time or 'now' (default: so that the sample ends two days ago).")
    ] = None,
    follow: Annotated[bool, typer.Option(help="Keep producing fresh sample events at --rate (default 50/s) until interrupted.")] = False,
    show_bad: Annotated[int, typer.Option(help="With --file: bad lines listed one by one; the rest are only counted.", min=0)] = 100,
) -> None:
    """Send sample events (and their late labels), or replay a file, keyed by the partition key.

    A replayed file (--file) is read with the types the pipeline declares for the stream (--stream
    events: events.fields; --stream labels: labels.fields), so a CSV "00123" in a string field stays
    "00123", and an empty unquoted CSV field is null as in Parquet or JSON. A bad line (not valid
    CSV/JSON, wrong number of fields, a value that does not fit its declared type) is reported as
    file:line and the reason and skipped; the rest is sent, and a summary counts what was skipped.
    The command still succeeds then; only a file that cannot be read at all fails, before anything is sent.

    Ordering guarantee: the rows are sent in exact order of the stream's time column (events.time_column
    or labels.time_column), ties in file order, whatever the order of the file. The file is read once
    in blocks, runs of rows are sorted in memory and spilled to $TMPDIR (an external merge sort), and
    the runs are merged while sending: memory stays bounded, temporary disk use is about the size of
    the data, and nothing is sent before the whole file has been read. Rows without a time go last.
    """
    s = state.settings()
    if file is None and stream is not ReplayStream.events:
        raise typer.BadParameter("--stream chooses what a replayed file holds; use it with --file", param_hint="--stream")
    if follow and file is not None:
        raise typer.BadParameter("--follow generates sample events; it cannot replay a --file", param_hint="--follow")
    if file is not None:
        _replay(s, file, stream.value, topic, rate, show_bad)
        return
    target = topic or s.pipeline.source.topic
    bootstrap = services.client_config(s.profile)  # servers and security settings
    settings = services.producer_settings(s.profile)
    if follow:
        _sample_fits(s, "--follow")
        _produce_forever(s, bootstrap, target, labels, rate or 50.0, seed)
        return
    _sample_fits(s, "--events")
    with console.status(f"generating {events:,} events over {days:g} days…"):
        sample = sample_data.generate(events, days, seed, start=_first_time(start))
    console.print(f"generated {events:,} events, positive rate {sample.fraud_rate:.2%}, {sample.labels.num_rows:,} labels")
    streams = producer.pipeline_streams(s.pipeline, sample.events, sample.labels if labels else None, topic=target)
    for st in streams:
        services.ensure_topic(bootstrap, st.topic, s.pipeline.source.partitions)
    total = sum(st.rows.num_rows for st in streams)
    with Progress(TextColumn("producing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("produce", total=total)
        report = producer.produce(bootstrap, streams, rate=rate, on_progress=lambda n: bar.advance(task, n), producer_config=settings)
    _print_sent(report)


def _replay(s: Settings, file: Path, stream: str, topic: str | None, rate: float | None, show_bad: int) -> None:
    """Read, check and time-sort the file (reporting bad lines), then send it: nothing goes out before the file is read."""
    target = producer.replay_target(s.pipeline, stream, topic)
    listed = [0]

    def on_bad(bad: BadLine) -> None:
        if listed[0] < show_bad:
            err.print(f"[yellow]skipped[/] {escape(str(bad))}", highlight=False, soft_wrap=True)
            listed[0] += 1

    reader = FileReader(file, target.fields, on_bad=on_bad)  # a file that cannot be read fails before any broker is contacted
    if reader.report.ignored_columns:
        console.print(
            f"[yellow]not sent:[/] column(s) {escape(str(reader.report.ignored_columns))} are not {stream} fields of pipeline {s.pipeline.name!r}",
            highlight=False,
        )
    amount = DownloadColumn() if reader.unit == "bytes" else MofNCompleteColumn()
    with Progress(TextColumn("reading"), BarColumn(), amount, TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("read", total=reader.total)
        rows = TimeSorted(reader.chunks(on_read=lambda n: bar.advance(task, n)), target.time_column)
    with rows:
        _print_read(reader.report, rows, listed[0], target.time_column)
        bootstrap = services.client_config(s.profile)
        services.ensure_topic(bootstrap, target.topic, s.pipeline.source.partitions)
        with Progress(TextColumn("producing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task("produce", total=rows.num_rows)
            report = producer.produce_rows(
                bootstrap,
                target.topic,
                rows,
                target.key_column,
                rate=rate,
                on_progress=lambda n: bar.advance(task, n),
                producer_config=services.producer_settings(s.profile),
            )
    _print_sent(report)


def _print_read(read: ReadReport, rows: TimeSorted, listed: int, time_column: str) -> None:
    unit = read.unit
    line = f"read {read.rows:,} rows from {escape(str(read.path))} in {read.chunks:,} chunk(s)"
    if read.skipped:
        plural = "" if read.skipped == 1 else "s"
        hidden = read.skipped - listed
        more = f"; {hidden:,} not listed (--show-bad)" if hidden > 0 else ""
        line += f"; [yellow]skipped {read.skipped:,} bad {unit}{plural}[/] (listed on stderr{more})"
    console.print(line, highlight=False)
    if rows.out_of_order:
        console.print(
            f"{rows.out_of_order:,} rows were earlier than a row before them in the file: sent in {time_column} order", highlight=False
        )
    if rows.no_time:
        console.print(f"[yellow]{rows.no_time:,} rows have no {time_column}:[/] sent last, in file order", highlight=False)


def _print_sent(report: producer.ProduceReport) -> None:
    for name, n in report.sent.items():
        console.print(f"[green]sent[/] {n:,} records to [bold]{name}[/]")
    console.print(f"{report.total:,} records acknowledged in {report.seconds:.1f}s ({report.total / max(report.seconds, 1e-9):,.0f}/s)")


def _produce_forever(s: Settings, bootstrap: services.Endpoint, target: str, labels: bool, rate: float, seed: int) -> None:
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
