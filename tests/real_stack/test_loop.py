"""The whole loop on the real stack (conf/profiles/pseudo.yaml), and the readers that must agree on its tables.

Kafka is Apache Kafka, tables are Delta on HDFS (written by delta-rs over hdfs://), the batch
cycle is an Airflow DAG run started by the scheduler whose Spark jobs go to a standalone
cluster, and the unified views are read through Trino. One module-scoped run of the loop
feeds every test; each comparison is made at the stage it names.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from lambdaflow import sample_data
from lambdaflow.config import Settings
from lambdaflow.contracts.paths import MASTER_EVENTS, existing_tables, sql_name
from lambdaflow.tables import Table
from lambdaflow_app.demo import Demo
from serving_layer.engine import open_session
from serving_layer.sql import view_definitions
from serving_layer.trino import apply_ddl, ddl_statements, run_query
from serving_layer.verify import to_millis
from tests.conftest import ROOT, PseudoStack, run_cli

HISTORY, LIVE = 15_000, 1_500


def _normal(value: Any) -> Any:
    """One value as both engines should agree on it: timestamps at Trino's millisecond precision, floats to 12 digits."""
    if isinstance(value, dt.datetime):
        return to_millis(value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc))
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.12g}")
    if isinstance(value, list):  # e.g. a prediction's feature vector, whose NaNs must compare equal too
        return tuple(_normal(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _normal(v)) for k, v in value.items()))
    return value


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    names = sorted(table.column_names)
    return sorted((tuple(_normal(r[n]) for n in names) for r in table.to_pylist()), key=repr)


def engine_differences(settings: Settings) -> dict[str, str]:
    """Every serving view through Trino and through DuckDB: the views whose rows differ, with a count of each side."""
    apply_ddl(settings, ddl_statements(settings))  # idempotent: new tables are registered, views replaced
    duck = open_session(settings)
    out = {}
    for view in view_definitions(settings.pipeline):
        sql = f'SELECT * FROM "{view}"'
        trino_rows, duck_rows = _rows(run_query(settings, sql)), _rows(duck.query(sql))
        if trino_rows != duck_rows:
            out[view] = f"trino {len(trino_rows)} rows, duckdb {len(duck_rows)} rows, {len(set(trino_rows) ^ set(duck_rows))} differ"
    return out


@dataclass
class Loop:
    """What the loop left behind for the tests to check."""

    stack: PseudoStack
    demo: Demo
    differences: dict[str, dict[str, str]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def loop(pseudo: PseudoStack) -> Loop:
    settings = pseudo.settings
    demo = Demo(settings, events=HISTORY, days=30.0, live_events=LIVE)
    demo.bootstrap = pseudo.bootstrap
    result = Loop(pseudo, demo)
    history = sample_data.generate(HISTORY, 30.0, seed=7)
    demo.produce(history)
    demo.speed(history.events.num_rows + history.labels.num_rows)
    # The first cycle as a data engineer runs it by hand: `lambdaflow batch run`, Spark on the standalone master.
    run_cli("--profile", "pseudo", "batch", "run", timeout=1200)
    result.differences["after the first batch publish"] = engine_differences(settings)
    end = history.events[settings.pipeline.events.time_column][-1].as_py()
    live = sample_data.generate(LIVE, 1.0, seed=8, start=end + dt.timedelta(seconds=1))
    demo.produce(live, junk=20)
    demo.speed(live.events.num_rows + live.labels.num_rows + 20)
    result.differences["after speed commits, before the next publish"] = engine_differences(settings)
    demo.batch_cycle()  # the scheduler's run (views, training set, champion, publish, expiry): W moves, speed rows expire
    result.differences["after a second publish and an expiry"] = engine_differences(settings)
    return result


def test_every_unified_view_is_the_same_through_trino_and_duckdb(loop: Loop) -> None:
    """Differential: every serving view, row for row, before and after a publish and an expiry, and after speed commits."""
    assert len(loop.differences) == 3
    assert all(not diff for diff in loop.differences.values()), loop.differences
    views = view_definitions(loop.stack.settings.pipeline)
    counts = {v: len(run_query(loop.stack.settings, f'SELECT * FROM "{v}"')) for v in views}
    assert all(n > 0 for v, n in counts.items() if v.startswith("unified_")), counts  # the views compared are not empty


def test_the_loop_ends_with_verify_through_trino_at_zero_differences(loop: Loop) -> None:
    """Kafka → speed layer → Delta on HDFS → Airflow scheduler → Spark standalone → Trino: verify --engine trino = 0."""
    settings, profile = loop.stack.settings, ["--profile", "pseudo"]
    done = run_cli(*profile, "verify", "--engine", "trino", timeout=600)
    assert "unified views (trino)" in done.stdout and "DIFFERENT" not in done.stdout
    master = Table(f"{settings.profile.storage.uri}/{MASTER_EVENTS}").snapshot().to_arrow()
    assert master.num_rows == HISTORY + LIVE and len(master.column("event_id").unique()) == master.num_rows
    counted = run_cli(*profile, "query", "--engine", "trino", "--format", "json", "SELECT COUNT(*) AS n FROM master_events")
    assert json.loads(counted.stdout) == [{"n": HISTORY + LIVE}]
    assert settings.profile.storage.uri.startswith("hdfs://127.0.0.1:")
    # the batch cycle's Spark jobs ran on the standalone cluster, not in local mode
    master_ui = next(r for r in _state(loop.stack).values() if r["name"] == "spark-master")["extra"]["webui"]
    with urllib.request.urlopen(f"{master_ui}/json/", timeout=10) as answer:
        apps = {a["name"] for a in json.load(answer)["completedapps"]}
    assert {"lambdaflow-batch-views", "lambdaflow-training-set", "lambdaflow-train"} <= apps, apps  # the jobs' own names


def _state(stack: PseudoStack) -> dict[str, Any]:
    return dict(json.loads((stack.home / "services" / "state.json").read_text()))


def test_trino_reads_every_table_after_compaction_checkpoint_and_vacuum(loop: Loop) -> None:
    """Maintenance rewrites files, writes checkpoints and deletes what no version needs: Trino still agrees with DuckDB."""
    from batch_layer.cycle import maintain

    settings = loop.stack.settings
    late = sample_data.generate(300, 1.0, seed=9)  # small commits after the DAG's own maintenance: something to compact
    loop.demo.produce(late)
    loop.demo.speed(late.events.num_rows + late.labels.num_rows)
    done = maintain(settings, retention_hours=0, compact=True)  # nothing kept for older versions: the hardest case
    assert sum(r["vacuumed"] for r in done.values()) > 0 and sum(r.get("files_removed", 0) for r in done.values()) > 0
    assert engine_differences(settings) == {}
    for name, uri in existing_tables(settings.profile):
        snap = Table(uri).snapshot()
        got = run_query(settings, f'SELECT COUNT(*) AS n FROM "{sql_name(name)}"')
        assert got.column("n")[0].as_py() == snap.num_records, name


SPARK_READ = """
import json, sys
import pyarrow.parquet as pq
from lambdaflow.config import load_settings
from lambdaflow.contracts.paths import existing_tables
from lambdaflow.spark import get_spark
settings = load_settings(profile="pseudo")
spark = get_spark(settings.profile.spark, app_name="delta-reader-check", master="local[2]")
out = sys.argv[1]
for name, uri in existing_tables(settings.profile):
    pq.write_table(spark.read.format("delta").load(uri).toArrow(), f"{out}/{name.replace('/', '__')}.parquet")
print(json.dumps([n for n, _ in existing_tables(settings.profile)]))
"""


def test_spark_native_delta_reader_returns_what_delta_rs_wrote(loop: Loop, tmp_path: Path) -> None:
    """Spark's own Delta reader (delta-spark jars from Maven Central) and delta-rs agree on every table on HDFS."""
    import pyarrow.parquet as pq

    done = subprocess.run([sys.executable, "-c", SPARK_READ, str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    names = json.loads(done.stdout.strip().splitlines()[-1])
    assert MASTER_EVENTS in names and len(names) >= 8
    for name, uri in existing_tables(loop.stack.settings.profile):
        ours = Table(uri).snapshot().to_arrow()
        theirs = pq.read_table(tmp_path / f"{name.replace('/', '__')}.parquet")
        assert sorted(theirs.column_names) == sorted(ours.column_names), name
        assert _rows(theirs.select(ours.column_names)) == _rows(ours), name
