"""`lambdaflow demo`: the whole Lambda loop, with progress throughout.

On the embedded default everything runs in-process or as a small local process; with
``--profile pseudo`` the same loop runs on the real stack (Apache Kafka, HDFS, a Spark
standalone cluster, Airflow's scheduler, Trino).

1. start the profile's services (``lambdaflow services up``);
2. produce a month of sample card transactions and their late chargebacks;
3. run the speed layer over it (exactly-once appends, quarantine, real-time views; no model yet);
4. run the batch cycle as one Airflow DAG run: ``airflow dags test lambdaflow_batch`` on the embedded
   default; on a profile with a Spark cluster, a run started through the scheduler's REST API whose
   ``SparkSubmitOperator`` tasks go to that cluster: batch views, training set, train and promote a
   champion, expire;
5. stream a day of live events (with a few malformed records) — now scored by the champion;
6. query the unified views (through Trino when the profile's ``sql_engine`` is trino, after
   ``trino-ddl --apply``), run ``verify`` through the same engine;
7. serve ``/features`` and ``/score`` over HTTP (loopback), log every vector, recompute them and a
   sample of the speed layer's predictions offline (``batch_layer/consistency.py``), and print a
   report; stop what the demo started.

The demo generates sample card transactions, so it runs on a pipeline the
sample fits (the default ``conf/pipeline.yaml``); everything after producing
speaks the pipeline's own names (views, keys, time column).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from lambdaflow import producer, registry, sample_data, services, storage
from lambdaflow.config import LocalStorage, Settings, ViewSpec
from lambdaflow.contracts.batch import batch_watermark
from lambdaflow.contracts.paths import PREDICTIONS, batch_view, existing_tables, local_path, sql_name, table_uri
from lambdaflow.errors import ConfigError
from lambdaflow.tables import Table
from lambdaflow.views import quote
from lambdaflow_app import airflow_local
from serving_layer.sql import FRESHNESS_VIEW, unified_name

console = Console()


class Demo:
    """The demo's stages, sharing the settings and the report."""

    def __init__(self, settings: Settings, events: int, days: float, live_events: int) -> None:
        self.settings = settings
        self.events = events
        self.days = days
        self.live_events = live_events
        self.report: dict[str, Any] = {}
        self.consistent = True
        self.bootstrap: list[str] = []

    def stage(self, title: str, fn: Callable[[], Any]) -> Any:
        console.rule(f"[bold cyan]{title}")
        t0 = time.monotonic()
        result = fn()
        console.print(f"[dim]… {time.monotonic() - t0:.1f}s[/]")
        return result

    def produce(self, sample: sample_data.SampleData, junk: int = 0) -> None:
        p = self.settings.pipeline
        streams = producer.pipeline_streams(p, sample.events, sample.labels)
        for s in streams:
            services.ensure_topic(self.bootstrap, s.topic, p.source.partitions)
        total = sum(s.rows.num_rows for s in streams)
        with Progress(TextColumn("  producing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("produce", total=total)
            report = producer.produce(
                self.bootstrap,
                streams,
                on_progress=lambda n: bar.advance(task, n),
                producer_config=services.producer_settings(self.settings.profile),
            )
        if junk:
            from kafka import KafkaProducer

            kafka = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")  # embedded broker: plaintext
            payloads = [b"\xff\xfe", b"{broken json", b'{"event_id": "x", "amount": "lots"}', b"[]"]
            for i in range(junk):
                kafka.send(p.source.topic, key=b"junk", value=payloads[i % len(payloads)])
            kafka.flush()
            kafka.close()
        console.print(
            f"  sent {report.total:,} records ({', '.join(f'{t}: {n:,}' for t, n in report.sent.items())})"
            + (f" + {junk} malformed" if junk else "")
        )

    def speed(self, expected: int) -> list[Any]:
        import logging

        from speed_layer.runner import SpeedLayer, configure_logging

        configure_logging(logging.WARNING)
        layer = SpeedLayer(self.settings, metrics_port=0)
        with Progress(
            TextColumn("  speed layer"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), console=console
        ) as bar:
            task = bar.add_task("speed", total=expected, info="")

            def advance(result: Any) -> None:
                model = f"model v{result.model_version}" if result.model_version else "no model yet"
                bar.update(
                    task,
                    advance=result.records,
                    info=f"batch {result.seq}: +{result.appended:,} events, +{result.labels:,} labels, {result.quarantined} quarantined, {model}",
                )

            results = layer.run(idle_exit_seconds=3, on_batch=advance)
        return results

    def batch_cycle(self) -> None:
        """One run of the `lambdaflow_batch` DAG through Airflow: the scheduler's with a Spark cluster, else `dags test`."""
        if self.settings.profile.spark.embedded:
            self._scheduled_run()
        else:
            self._test_run()
        self._report_champion()

    def _scheduled_run(self) -> None:
        with console.status("  starting Airflow (API server, scheduler, DAG processor)…"):
            env, url = airflow_local.start_scheduler(self.settings)
            api = airflow_local.AirflowApi(url, Path(env["AIRFLOW_HOME"]))
            run_id = api.trigger("lambdaflow_batch")
        console.print(f"  run {run_id} started by the scheduler at {url}; Spark jobs go to {self.settings.profile.spark.master}")
        marks = {"success": "[green]✓[/]", "failed": "[red]✗[/]", "up_for_retry": "[yellow]↻[/]", "running": "[cyan]…[/]"}
        with console.status("  waiting for the scheduler…") as status:

            def follow(task: str, state: str) -> None:
                if state == "running":
                    status.update(f"  airflow: running [bold]{task}[/] …")
                elif state in marks:
                    console.print(f"  {marks[state]} {task} ({state})")

            state = api.wait("lambdaflow_batch", run_id, follow)
        if state != "success":
            raise RuntimeError(f"the batch DAG run {run_id} ended {state}; task logs under {env['AIRFLOW_HOME']}/logs")

    def _test_run(self) -> None:
        import re

        env = airflow_local.airflow_env(self.settings)
        with console.status("  preparing the Airflow metadata DB…"):
            airflow_local.migrate(env)
        started = re.compile(r"\[DAG TEST\] starting task_id=(\w+)")
        ended = re.compile(r"\[DAG TEST\] end task task_id=(\w+)")
        with console.status("  airflow dags test lambdaflow_batch …") as status:

            def follow(line: str) -> None:
                if m := started.search(line):
                    status.update(f"  airflow: running [bold]{m.group(1)}[/] …")
                elif m := ended.search(line):
                    console.print(f"  [green]✓[/] {m.group(1)}")
                elif "new_state=up_for_retry" in line:
                    console.print("  [yellow]↻[/] a task failed and will be retried")

            ok, lines = airflow_local.test_dag(env, "lambdaflow_batch", follow)
        log_file = Path(env["AIRFLOW_HOME"]) / "last-dag-run.log"
        log_file.write_text("".join(lines))
        console.print(f"  [dim]full Airflow log: {log_file}[/]")
        if not ok:
            console.print("".join(lines[-40:]))
            raise RuntimeError(f"the batch DAG run failed (the end of its log is above, all of it in {log_file})")

    def _report_champion(self) -> None:
        first_view = next(iter(self.settings.pipeline.view_by_name))
        watermark = batch_watermark(Table(table_uri(self.settings.profile, batch_view(first_view))).snapshot())
        version = registry.champion_version(self.settings)
        tags = registry.client(self.settings).get_model_version(registry.model_name(self.settings), str(version)).tags
        metrics = {k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")}
        plot = storage.files(self.settings.profile).uri(f"plots/evaluation-v{version}.png")
        console.print(f"  champion v{version}: ROC-AUC {metrics['roc_auc']:.3f}, PR-AUC {metrics['pr_auc']:.3f}")
        self.report.update(watermark=watermark, model={"version": version, "metrics": metrics, "plot": str(plot)})

    def _session(self) -> Any:
        """The profile's SQL engine: DuckDB in-process, or Trino once the tables and views are registered there."""
        if self.settings.profile.sql_engine == "trino":
            from serving_layer.trino import apply_ddl, ddl_statements, open_trino_session

            apply_ddl(self.settings, ddl_statements(self.settings))
            return open_trino_session(self.settings)
        from serving_layer.engine import open_session

        return open_session(self.settings)

    def queries(self) -> None:
        session = self._session()
        console.print(f"  through {self.settings.profile.sql_engine}")
        view = _showcase_view(self.settings.pipeline.views)
        order = next((name for name, agg in view.aggregates.items() if agg.fn == "count"), next(iter(view.aggregates)))
        shown = ", ".join(quote(c) for c in [*view.keys, *list(view.aggregates)[:3]])
        top = session.query(f"SELECT {shown} FROM {quote(unified_name(view.name))} ORDER BY {quote(order)} DESC LIMIT 5")
        _print(f"top keys by {order} ({unified_name(view.name)})", top)
        alerts = session.query(
            'SELECT "model_version", COUNT(*) AS events, SUM(CASE WHEN "decision" THEN 1 ELSE 0 END) AS alerts, '
            f'ROUND(AVG("score"), 4) AS mean_score FROM {quote(sql_name(PREDICTIONS))} WHERE "scored" GROUP BY "model_version"'
        )
        _print("live scoring (predictions)", alerts)
        _print(f"freshness ({FRESHNESS_VIEW})", session.query(f"SELECT * FROM {quote(FRESHNESS_VIEW)}"))
        counts = session.query(
            'SELECT (SELECT COUNT(*) FROM "master_events") AS events, (SELECT COUNT(*) FROM "quarantine") AS quarantined'
        )
        self.report.update(counts.to_pylist()[0])
        newest = session.query('SELECT MAX("_ingested_at") AS t FROM "master_events"').to_pylist()[0]
        self.report["freshness_s"] = (dt.datetime.now(dt.timezone.utc) - newest["t"]).total_seconds() if newest["t"] else None

    def verify(self) -> bool:
        from serving_layer.verify import verify

        trino = self.settings.profile.sql_engine == "trino"
        checks = verify(self.settings, self._session(), millis=trino)
        for c in checks:
            mark = "[green]ok[/]" if c.ok else "[red]DIFFERENT[/]"
            console.print(f"  {c.view:<24} {c.matching:>8,} keys match, {c.differing} differ, {c.missing} missing, {c.extra} extra  {mark}")
        ok = all(c.ok for c in checks)
        self.report["verify"] = "zero differences" if ok else "DIFFERENCES FOUND"
        return ok

    def online(self, live: sample_data.SampleData, count: int = 300) -> None:
        """Serve /features and /score over HTTP on loopback, log every vector, then recompute them all offline."""
        import threading
        import urllib.parse
        import urllib.request

        import uvicorn

        from batch_layer.consistency import check_consistency
        from lambdaflow.spark import get_spark
        from serving_layer.api import create_app
        from serving_layer.lookups import query_fields

        serving = self.settings.profile.serving.model_copy(update={"feature_log_sample": 1.0, "token": None})
        settings = self.settings.model_copy(update={"profile": self.settings.profile.model_copy(update={"serving": serving})})
        app = create_app(settings, host="127.0.0.1")
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started and thread.is_alive():
            time.sleep(0.05)
        if not server.started:
            raise ConfigError("the API did not start on 127.0.0.1 (its error is above)")
        base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        ev = settings.pipeline.events
        rows = live.events.slice(max(live.events.num_rows - count, 0)).to_pylist()
        try:
            for i, row in enumerate(rows):
                if i % 2 and self.report.get("model"):  # every other one as /score (needs a champion), the rest as /features
                    body = producer.encode_row({**row, ev.id_column: f"demo-score-{i}"})
                    urllib.request.urlopen(urllib.request.Request(f"{base}/score", data=body, method="POST"), timeout=30).read()
                    continue
                key = urllib.parse.quote(str(row[ev.partition_key]), safe="")
                query = urllib.parse.urlencode(query_fields(settings.pipeline, row))
                urllib.request.urlopen(f"{base}/features/{key}?{query}", timeout=30).read()
        finally:
            server.should_exit = True
        logged = app.state.feature_log.flush()
        console.print(f"  {len(rows):,} vectors served over HTTP at {base} ({logged:,} logged; the rest on shutdown)")
        spark = get_spark(settings.profile.spark, app_name="lambdaflow-consistency")
        report = check_consistency(settings, spark, sample=0.05)
        for source, n in sorted(report.compared.items()):
            differing = sorted(f for f, r in report.results[source].items() if r["mismatches"])
            console.print(
                f"  {source:<12} {n:>7,} vectors recomputed offline: "
                + (f"[red]differ in {differing}[/]" if differing else "[green]all equal[/]")
            )
        console.print(f"  table serving/feature_consistency (SQL view feature_consistency); plot: {report.plot}")
        self.consistent = not report.mismatches
        checked = ", ".join(f"{n:,} {s}" for s, n in sorted(report.compared.items()))
        self.report["consistency"] = f"{report.mismatches} mismatching values over {checked} vectors recomputed offline"

    def run(self, keep_services: bool) -> bool:
        profile = self.settings.profile
        started = time.monotonic()
        already = {r.name for r in services.status(profile) if r.running}
        if "broker" not in already and isinstance(profile.storage, LocalStorage):
            self._set_aside_previous_run()
        planned = ", ".join(services.planned(profile))
        self.stage(f"1. start the services: {planned}", lambda: self._services_up())
        self.bootstrap = services.bootstrap_servers(profile)
        console.print(f"  broker at {self.bootstrap[0]}; tables under {profile.storage.uri}")
        try:
            history = self.stage(
                f"2. a month of history: {self.events:,} card transactions over {self.days:g} days",
                lambda: sample_data.generate(self.events, self.days, seed=7),
            )
            self.stage("   … produced to Kafka with their chargebacks", lambda: self.produce(history))
            self.stage(
                "3. speed layer over the history (no model yet: events kept, predictions unscored)",
                lambda: self.speed(history.events.num_rows + history.labels.num_rows),
            )
            self.stage("4. batch cycle through Airflow: views → training set → XGBoost → champion → expiry", self.batch_cycle)
            end = history.events[self.settings.pipeline.events.time_column][-1].as_py()
            live = sample_data.generate(self.live_events, 1.0, seed=8, start=end + dt.timedelta(seconds=1))
            self.stage(f"5. live: {self.live_events:,} fresh events, a few malformed", lambda: self.produce(live, junk=40))
            self.stage("   … scored by the champion as they arrive", lambda: self.speed(live.events.num_rows + live.labels.num_rows + 40))
            self.stage("6. unified views through SQL", self.queries)
            ok = self.stage("7. verify: every unified view against a from-scratch recompute", self.verify)
            self.stage("8. online: /features and /score over HTTP, then online/offline consistency (Spark)", lambda: self.online(live))
            ok = ok and self.consistent
        finally:
            if not keep_services and not already:
                self.stage("9. stop the services this demo started", lambda: services.down(profile))
        self._summary(time.monotonic() - started)
        return ok

    def _services_up(self) -> None:
        profile = self.settings.profile
        for record in services.up(profile, on_start=lambda name: console.print(f"  starting {name}…")).values():
            console.print(f"  [green]up[/] {record.name:<12} {record.address:<36} ready in {record.ready_seconds:.1f}s")

    def _set_aside_previous_run(self) -> None:
        """Move an earlier run's tables aside: a freshly started broker does not hold the log they recorded.

        Nothing is deleted; the speed layer would otherwise (rightly) stop on the gap between the
        offsets the old tables recorded and the new, empty log.
        """
        import shutil

        root = local_path(self.settings.profile.storage.uri)
        if not existing_tables(self.settings.profile):
            return
        aside = root / "previous-runs" / dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        aside.mkdir(parents=True)
        for entry in root.iterdir():
            if entry.name not in ("services", "previous-runs"):
                shutil.move(str(entry), aside / entry.name)
        console.print(f"  [dim]an earlier run's tables and models were moved to {aside}[/]")

    def _summary(self, seconds: float) -> None:
        r = self.report
        model = r.get("model")
        table = RichTable(title="Lambdaflow demo", show_header=False)
        table.add_column(style="bold")
        table.add_column()
        table.add_row("events ingested", f"{r.get('events', 0):,}")
        table.add_row("quarantined", f"{r.get('quarantined', 0):,} (malformed records, with reasons)")
        table.add_row("batch watermark W", str(r.get("watermark")))
        if model is not None:
            m = model["metrics"]
            table.add_row(
                "champion model",
                f"v{model['version']}: ROC-AUC {m['roc_auc']:.3f}, PR-AUC {m['pr_auc']:.3f}, "
                f"precision {m['precision_at_threshold']:.2f} / recall {m['recall_at_threshold']:.2f} at the alert threshold",
            )
            table.add_row("evaluation plot", model["plot"])
        if r.get("freshness_s") is not None:
            table.add_row("freshness", f"newest event ingested {r['freshness_s']:.0f}s ago")
        table.add_row("verify", r.get("verify", "not run"))
        table.add_row("online/offline consistency", r.get("consistency", "not run"))
        table.add_row("tables", self.settings.profile.storage.uri)
        table.add_row("took", f"{seconds / 60:.1f} min")
        console.print(table)
        example = unified_name(_showcase_view(self.settings.pipeline.views).name)
        console.print(
            f"Next: [bold]lambdaflow query 'SELECT * FROM {example} LIMIT 5'[/] · [bold]lambdaflow tables list[/] · [bold]lambdaflow verify[/]"
        )


def _showcase_view(views: list[ViewSpec]) -> ViewSpec:
    """The view the report shows: the first all-time view with a count, else the first view."""
    return next((v for v in views if v.bucket is None and any(a.fn == "count" for a in v.aggregates.values())), views[0])


def _print(title: str, result: Any) -> None:
    table = RichTable(title=title)
    for name in result.column_names:
        table.add_column(name)
    for row in result.to_pylist():
        table.add_row(*[str(v) for v in row.values()])
    console.print(table)


def run(settings: Settings, events: int = 300_000, days: float = 30.0, live_events: int = 20_000, keep_services: bool = False) -> bool:
    """Run the demo; True when verify found zero differences.

    Raises:
        ConfigError: the sample generator does not fit the pipeline, or it declares no view.
    """
    import logging

    missing = sample_data.missing_fields(settings.pipeline)
    if missing or not settings.pipeline.views:
        why = f"its events also need {missing}" if missing else "it declares no view"
        raise ConfigError(f"the demo generates sample card transactions, which do not fit pipeline {settings.pipeline.name!r}: {why}")

    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # the client's event-loop timing warnings are noise here
    return Demo(settings, events, days, live_events).run(keep_services)
