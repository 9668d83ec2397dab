"""``lambdaflow batch …``: the batch layer's steps, one at a time or the whole cycle.

The Spark commands run the same functions with the same flags as the
spark-submit jobs in ``batch_layer/jobs/`` and leave through
:func:`lambdaflow.spark.finish`, so their exit code is the command's own.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Optional

import typer
from rich.table import Table as RichTable

from lambdaflow.contracts.consistency import DEFAULT_MAX_ROWS, DEFAULT_SAMPLE
from lambdaflow.spark import finish
from lambdaflow_app.cli._common import console, start_spark, state

app = typer.Typer(help="The batch layer: Spark jobs and the cycle's steps over the master dataset.", no_args_is_help=True)

SparkMaster = Annotated[Optional[str], typer.Option("--master", help="Spark master (default: the profile's).")]
MasterVersion = Annotated[Optional[int], typer.Option(help="Delta version of master/events to read (default: latest).")]


def _cutoff(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return dt.datetime.fromisoformat(text).astimezone(dt.timezone.utc)
    except ValueError:
        raise typer.BadParameter(f"expected an ISO time, found {text!r}", param_hint="--cutoff") from None


def print_views_report(report: Any) -> None:
    table = RichTable(title=f"batch views at master v{report.master_version}, watermark W={report.watermark}")
    for col in ("view", "table version", "rows", "state"):
        table.add_column(col)
    for name, r in report.views.items():
        table.add_row(name, str(r.table_version), f"{r.rows:,}", "skipped (already computed)" if r.skipped else "published")
    console.print(table)
    console.print(f"{report.events:,} events ({report.duplicates_removed:,} duplicate deliveries removed) in {report.seconds:.1f}s")


def print_training_set_report(report: Any) -> None:
    console.print(
        f"[green]training set[/] v{report.table_version}: {report.rows:,} events, {report.positives:,} positive "
        f"({report.positives / max(report.rows, 1):.2%}), cut-off {report.cutoff}, watermark W={report.watermark}, {report.seconds:.1f}s"
    )


def print_train_report(report: Any) -> None:
    table = RichTable(title=f"model v{report.version} on {report.holdout_rows:,} holdout events (positive rate {report.positive_rate:.2%})")
    table.add_column("metric")
    for col in ("new model", "champion", "baseline"):
        table.add_column(col, justify="right")
    for name, value in report.metrics.items():
        champ = report.champion_metrics.get(name) if report.champion_metrics else None
        base = report.baseline_metrics.get(name)
        table.add_row(name, f"{value:.4f}", "—" if champ is None else f"{champ:.4f}", "—" if base is None else f"{base:.4f}")
    console.print(table)
    console.print(("[green]promoted[/] " if report.promoted else "[yellow]not promoted[/] ") + report.reason)
    console.print(f"plot: {report.plot}   MLflow run: {report.run_id}   ({report.train_rows:,} training events, {report.seconds:.1f}s)")


@app.command("views")
def batch_views(
    master_version: MasterVersion = None,
    view: Annotated[Optional[list[str]], typer.Option(help="Only this view (repeatable).")] = None,
    force: Annotated[bool, typer.Option(help="Recompute even if this snapshot was already computed.")] = False,
    spark_master: SparkMaster = None,
) -> None:
    """Recompute every batch view from one snapshot of master/events (same job as spark-submit runs)."""
    from batch_layer.views import recompute_views

    spark = start_spark("lambdaflow-batch-views", spark_master)
    with console.status("recomputing batch views…"):
        report = recompute_views(state.settings(), spark, master_version, view, force)
    print_views_report(report)
    finish(0)


@app.command("training-set")
def batch_training_set(
    master_version: MasterVersion = None,
    cutoff: Annotated[Optional[str], typer.Option(help="What is known: ISO time (default: the snapshot's ingest time).")] = None,
    spark_master: SparkMaster = None,
) -> None:
    """Build the point-in-time training set (features as the speed layer saw them, labels known at the cut-off)."""
    from batch_layer.training import build_training_set

    when = _cutoff(cutoff)
    spark = start_spark("lambdaflow-training-set", spark_master)
    with console.status("building the training set…"):
        report = build_training_set(state.settings(), spark, master_version, when)
    print_training_set_report(report)
    finish(0)


def print_consistency_report(report: Any) -> None:
    """Per source, the features that differ (or all agree), then where the plot is."""
    for source, results in report.results.items():
        table = RichTable(title=f"{source}: {report.compared[source]:,} vectors recomputed offline at master v{report.master_version}")
        for col in ("feature", "mismatch rate", "missing rate", "mean relative error"):
            table.add_column(col, justify="left" if col == "feature" else "right")
        for name, r in results.items():
            mre = r["mean_relative_error"]
            style = "red" if r["mismatches"] else ""
            table.add_row(name, f"{r['mismatch_rate']:.2%}", f"{r['missing_rate']:.2%}", "—" if mre is None else f"{mre:.2e}", style=style)
        console.print(table)
    for source, n in report.skipped.items():
        console.print(f"[yellow]{source}: {n:,} vectors left out, served under another feature list (a pipeline change)[/]")
    if not report.compared:
        console.print("[yellow]nothing to check: no logged vectors (serving.feature_log_sample) and no predictions yet[/]")
    verdict = "[green]0 mismatches[/]" if not report.mismatches else f"[red]{report.mismatches:,} mismatching values[/]"
    console.print(f"online/offline consistency: {verdict}; plot: {report.plot}   ({report.seconds:.1f}s)")


@app.command("consistency")
def batch_consistency(
    master_version: MasterVersion = None,
    sample: Annotated[float, typer.Option(min=0, max=1, help="Share of the speed layer's predictions to check.")] = DEFAULT_SAMPLE,
    max_rows: Annotated[int, typer.Option(min=1, help="Most vectors checked per source.")] = DEFAULT_MAX_ROWS,
    fail_on_mismatch: Annotated[bool, typer.Option(help="Exit with 1 when any value differs (for schedulers).")] = False,
    spark_master: SparkMaster = None,
) -> None:
    """Recompute served feature vectors with the training-set code and report per feature how many differ."""
    from batch_layer.consistency import check_consistency

    spark = start_spark("lambdaflow-consistency", spark_master)
    with console.status("recomputing served vectors offline…"):
        report = check_consistency(state.settings(), spark, sample, max_rows, master_version)
    print_consistency_report(report)
    finish(1 if fail_on_mismatch and report.mismatches else 0)


@app.command("train")
def batch_train(
    spark_master: SparkMaster = None,
    shuffle_labels: Annotated[bool, typer.Option(help="Train on random labels: a deliberately worse model.")] = False,
) -> None:
    """Train XGBoost on the training set, evaluate on a time-based holdout, register, promote if better."""
    from batch_layer.train import train

    spark = start_spark("lambdaflow-train", spark_master)
    with console.status("training…"):
        report = train(state.settings(), spark, shuffle_labels=shuffle_labels)
    print_train_report(report)
    finish(0)


@app.command("publish")
def batch_publish(
    master_version: Annotated[int, typer.Option(help="The master version every view must have been recomputed from.")],
    run_id: Annotated[Optional[str], typer.Option(help="Recorded in batch/_runs (default: manual__<time>).")] = None,
) -> None:
    """Check that every view was published from the snapshot and record the run in batch/_runs (once per run id)."""
    from batch_layer.cycle import publish

    run = run_id or f"manual__{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}"
    console.print_json(json.dumps(publish(state.settings(), run, master_version), default=str))


@app.command("expire")
def batch_expire() -> None:
    """Drop speed partials already absorbed by the previous batch run (safe while readers and the speed layer run)."""
    from batch_layer.cycle import expire

    for view, through in expire(state.settings()).items():
        console.print(f"{view}: " + (f"expired speed rows through micro-batch {through}" if through >= 0 else "nothing to expire yet"))


@app.command("run")
def batch_run(
    run_id: Annotated[Optional[str], typer.Option(help="Recorded in batch/_runs (default: manual__<time>).")] = None,
    spark_master: SparkMaster = None,
) -> None:
    """The whole batch cycle in this process, in the DAG's order: snapshot → views → training set → train → publish → expire → maintain."""
    from batch_layer.cycle import run_cycle

    spark = start_spark("lambdaflow-batch-cycle", spark_master)
    printers = {
        "recompute_views": print_views_report,
        "build_training_set": print_training_set_report,
        "train_evaluate_promote": print_train_report,
    }

    def done(step: str, result: Any) -> None:
        console.rule(f"[green]✓[/] {step}")
        printer = printers.get(step)
        if printer is not None:
            printer(result)
        elif step != "maintenance":
            console.print_json(json.dumps(result, default=str))

    run_cycle(state.settings(), spark, run_id, on_step=done)
    finish(0)
