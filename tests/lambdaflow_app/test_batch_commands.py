"""The batch cycle from the front door: `lambdaflow batch run` and `lambdaflow airflow …`, run as users run them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lambdaflow.config import LocalStorage
from lambdaflow.contracts.master import events_table, labels_table, to_label_rows, to_master_rows
from lambdaflow.sample_data import generate
from tests.conftest import run_cli

pytestmark = pytest.mark.integration


@pytest.fixture
def profile_path(settings, tmp_path: Path) -> Path:
    profile = settings.profile.model_copy(update={"storage": LocalStorage(kind="local", root=str(tmp_path / "root"))})
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile.model_dump(by_alias=True, mode="json")))
    local = settings.model_copy(update={"profile": profile})
    sample = generate(20_000, days=30, seed=5)
    events_table(local).append(to_master_rows(sample.events, local.pipeline.events, 1))
    labels_table(local).append(to_label_rows(sample.labels, local.pipeline.labels, 1))
    return path


def test_batch_run_does_every_step_exits_0_and_records_a_queryable_run(profile_path: Path) -> None:
    result = run_cli("batch", "run", "--run-id", "cli-run-1", profile=profile_path, timeout=900)
    assert result.returncode == 0  # no teardown abort (exit 134) after the work is committed
    steps = ("recompute_views", "build_training_set", "train_evaluate_promote", "publish_watermark", "expire_speed_rows", "maintenance")
    positions = [result.stdout.find(step) for step in steps]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), result.stdout
    runs = run_cli("query", "SELECT run_id, master_version, watermark FROM batch_runs", "--format", "json", profile=profile_path)
    assert json.loads(runs.stdout) == [{"run_id": "cli-run-1", "master_version": 1, "watermark": 1}]
    again = run_cli("batch", "run", "--run-id", "cli-run-1", profile=profile_path, timeout=900)  # idempotent: same run, same tables
    assert "skipped (already computed)" in again.stdout
    assert json.loads(run_cli("query", "SELECT COUNT(*) AS n FROM batch_runs", "--format", "json", profile=profile_path).stdout) == [
        {"n": 1}
    ]


def test_airflow_commands_get_the_project_environment(profile_path: Path) -> None:
    result = run_cli("airflow", "dags", "report", "--output", "json", profile=profile_path, timeout=600)
    report = json.loads(next(line for line in reversed(result.stdout.splitlines()) if line.startswith("[{")))
    dag_ids = {dag for entry in report for dag in entry["dags"]}
    assert {"lambdaflow_batch", "lambdaflow_maintenance"} <= dag_ids
    assert (profile_path.parent / "root" / "airflow" / "airflow.db").is_file()  # the home under the storage root
