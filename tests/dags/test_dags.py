"""The Airflow DAGs: they load, they are wired in order, and the batch DAG runs end to end on real tables.

The batch DAG runs through `airflow dags test` (SQLite metadata DB made by
`airflow db migrate` under the test's storage root) and submits its Spark jobs
with spark-submit, exactly as a scheduler would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from batch_layer.cycle import STEPS
from lambdaflow import registry
from lambdaflow.config import load_settings
from lambdaflow.contracts.master import events_table, labels_table, to_label_rows, to_master_rows
from lambdaflow.contracts.paths import RUNS, TRAINING_SET, batch_view, table_uri
from lambdaflow.faults import CRASH_AT_ENV, CRASH_ONCE_ENV
from lambdaflow.sample_data import generate
from lambdaflow.tables import Table
from tests.conftest import ROOT

DAGS = ROOT / "dags"
BATCH_ORDER = list(STEPS)  # the DAG runs the same steps in the same order as `lambdaflow batch run`


def test_dags_load_without_errors_and_in_order(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.models.dagbag import DagBag

    monkeypatch.setenv("LAMBDAFLOW_CONF", str(ROOT / "conf"))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert {"lambdaflow_batch", "lambdaflow_maintenance"} <= set(bag.dags)
    batch = bag.dags["lambdaflow_batch"]
    for dag in bag.dags.values():
        dag.check_cycle()  # raises on a cycle
    for upstream, downstream in zip(BATCH_ORDER, BATCH_ORDER[1:]):
        assert batch.get_task(upstream).downstream_task_ids == {downstream}
    assert batch.get_task("recompute_views").__class__.__name__ == "SparkSubmitOperator"
    assert batch.default_args["retries"] == settings.profile.airflow.retries
    maintenance = bag.dags["lambdaflow_maintenance"]
    assert list(maintenance.task_dict) == ["speed_health", "serving_accuracy", "feature_consistency"]
    assert maintenance.get_task("speed_health").downstream_task_ids == {"serving_accuracy", "feature_consistency"}
    assert maintenance.get_task("feature_consistency").__class__.__name__ == "SparkSubmitOperator"


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("dag-root")
    profile = yaml.safe_load((ROOT / "conf/profiles/local.yaml").read_text())
    profile["storage"]["root"] = str(root / "data")
    profile["airflow"].update({"retries": 1, "retry_delay": "1s"})
    profile["spark"]["conf"]["spark.driver.memory"] = "1g"
    profile_path = root / "profile.yaml"
    profile_path.write_text(yaml.safe_dump(profile))
    env = {
        **os.environ,
        "LAMBDAFLOW_PROFILE": str(profile_path),
        "LAMBDAFLOW_CONF": str(ROOT / "conf"),
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(ROOT),
    }
    settings = load_settings(str(profile_path), ROOT / "conf/pipeline.yaml")
    sample = generate(12_000, days=30, seed=23)
    events_table(settings).append(to_master_rows(sample.events, settings.pipeline.events, 1))
    labels_table(settings).append(to_label_rows(sample.labels, settings.pipeline.labels, 1))
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    env["__AIRFLOW_BIN"] = airflow
    return env


def run_dag(env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [env["__AIRFLOW_BIN"], "dags", "test", "lambdaflow_batch"], env={**env, **extra}, capture_output=True, text=True, timeout=900
    )


def state(env: dict[str, str]) -> dict[str, object]:
    """What the batch cycle produces: batch views, training set, registered models, champion."""
    settings = load_settings(env["LAMBDAFLOW_PROFILE"], ROOT / "conf/pipeline.yaml")
    out: dict[str, object] = {}
    for view in ("account_profile", "merchant_daily"):
        table = Table(table_uri(settings.profile, batch_view(view)))
        published = table.exists() and table.version() > 0  # version 0 is the empty table a job creates first
        out[view] = (table.version(), _rows(table.snapshot().to_arrow())) if published else None
    training = Table(table_uri(settings.profile, TRAINING_SET))
    out["training_set"] = _rows(training.snapshot().to_arrow()) if training.exists() else None
    out["champion"] = registry.champion_version(settings)
    c = registry.client(settings)
    out["model_versions"] = len(c.search_model_versions(f"name = '{registry.model_name(settings)}'")) if out["champion"] else 0
    return out


def _rows(table: pa.Table) -> list[tuple]:
    return sorted(tuple(str(v) for v in r.values()) for r in table.to_pylist())


def test_batch_dag_survives_a_killed_spark_job_and_a_rerun_changes_nothing(airflow_env: dict[str, str], tmp_path: Path) -> None:
    """One scenario, three `dags test` runs (each full run costs about 90 s of Spark start-ups, so they are shared):

    1. every attempt is killed after Spark wrote its files: the run fails and nothing is published;
    2. with the profile's one retry, the first attempt is killed and the second completes the whole cycle;
    3. a rerun on the same master data changes nothing: same view versions, same training set, no new model.
    """
    before = state(airflow_env)
    failing = run_dag(airflow_env, **{CRASH_AT_ENV: "batch-views:staged"})
    assert "state=failed" in failing.stdout + failing.stderr
    assert state(airflow_env) == before
    marker = tmp_path / "crashed-once"
    retried = run_dag(airflow_env, **{CRASH_AT_ENV: "batch-views:staged", CRASH_ONCE_ENV: str(marker)})
    assert marker.exists(), "the first attempt was not killed"
    assert retried.returncode == 0, retried.stdout[-4000:] + retried.stderr[-4000:]
    output = retried.stdout + retried.stderr
    assert "new_state=up_for_retry" in output and "state=success" in output  # killed once, then retried to the end
    after_first = state(airflow_env)
    assert after_first["account_profile"] != before["account_profile"]  # the events are in the views now
    assert after_first["champion"] == 1 and after_first["training_set"]
    rerun = run_dag(airflow_env)
    assert rerun.returncode == 0, rerun.stdout[-4000:] + rerun.stderr[-4000:]
    assert state(airflow_env) == after_first
    settings = load_settings(airflow_env["LAMBDAFLOW_PROFILE"], ROOT / "conf/pipeline.yaml")
    runs = Table(table_uri(settings.profile, RUNS)).snapshot().to_arrow()
    assert runs.num_rows == 2 and len(set(runs.column("watermark").to_pylist())) == 1


def test_maintenance_dag_fails_clearly_when_the_speed_layer_is_unhealthy(airflow_env: dict[str, str]) -> None:
    """No broker for this profile: lag cannot be measured, which must fail the run with the reason, not pass silently."""
    result = subprocess.run(
        [airflow_env["__AIRFLOW_BIN"], "dags", "test", "lambdaflow_maintenance"],
        env=airflow_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert "state=failed" in output
    assert "speed layer unhealthy: consumer lag unknown" in output
