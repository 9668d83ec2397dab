"""Operations, scheduled by Airflow: speed-layer health (fails loudly past the profile's thresholds), serving accuracy,
and online/offline feature consistency (a Spark job; any served value that differs from its recompute fails it)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lambdaflow_spark import spark_task

from lambdaflow.config import load_settings

PROFILE = load_settings().profile


def speed_health() -> dict:
    from lambdaflow.health import check

    health = check(load_settings())
    if health.problems:
        # a crossed threshold is a failed task, not a retry: someone has to look
        raise AirflowFailException("speed layer unhealthy: " + "; ".join(health.problems))
    return health.as_dict()


def serving_accuracy() -> list[dict]:
    from serving_layer.engine import open_session

    rows = open_session(load_settings()).query('SELECT * FROM "model_performance" ORDER BY "model_version"')
    return [{k: (float(v) if isinstance(v, float) else v) for k, v in r.items()} for r in rows.to_pylist()]


with DAG(
    dag_id="lambdaflow_maintenance",
    description="Speed-layer health, serving accuracy per model version, online/offline feature consistency",
    schedule=PROFILE.airflow.health_schedule,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["lambdaflow", "operations"],
    default_args={"retries": 0, "execution_timeout": dt.timedelta(minutes=10), "pool": PROFILE.airflow.pool},
) as dag:
    health = PythonOperator(task_id="speed_health", python_callable=speed_health)
    accuracy = PythonOperator(task_id="serving_accuracy", python_callable=serving_accuracy)
    consistency = spark_task("feature_consistency", "check_consistency.py", "--fail-on-mismatch")
    # a Spark job over the sampled keys' histories: the batch cycle's task timeout, not the health checks' 10 minutes
    consistency.execution_timeout = dt.timedelta(seconds=PROFILE.airflow.task_timeout)
    health >> [accuracy, consistency]
