"""The batch cycle, scheduled by Airflow: snapshot → views → training set → train/promote → publish → expire → maintain.

Spark work goes through ``SparkSubmitOperator`` to the master of the profile
(``local[*]`` on one machine, ``spark://``, ``yarn`` or ``k8s://`` on a cluster);
schedule, retries, timeouts and the pool come from the profile too. Every task
is idempotent: views skip a snapshot they already published, the training set
is rebuilt identically, training skips a training-set version it already
registered, publish records a run once.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lambdaflow_spark import spark_task

from batch_layer import cycle
from lambdaflow.config import load_settings

SETTINGS = load_settings()
PROFILE = SETTINGS.profile
MASTER_VERSION = "{{ ti.xcom_pull(task_ids='snapshot')['master_version'] }}"


with DAG(
    dag_id="lambdaflow_batch",
    description="Lambdaflow batch cycle: recompute views, retrain, publish, expire, maintain",
    schedule=PROFILE.airflow.schedule,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["lambdaflow", SETTINGS.pipeline.name],
    default_args={
        "retries": PROFILE.airflow.retries,
        "retry_delay": dt.timedelta(seconds=PROFILE.airflow.retry_delay),
        "execution_timeout": dt.timedelta(seconds=PROFILE.airflow.task_timeout),
        "pool": PROFILE.airflow.pool,
    },
) as dag:
    snapshot = PythonOperator(task_id="snapshot", python_callable=lambda: cycle.snapshot(load_settings()))
    views = spark_task("recompute_views", "recompute_views.py", "--master-version", MASTER_VERSION)
    training_set = spark_task("build_training_set", "build_training_set.py", "--master-version", MASTER_VERSION)
    train = spark_task("train_evaluate_promote", "train_model.py")
    publish = PythonOperator(
        task_id="publish_watermark",
        python_callable=lambda run_id, master_version: cycle.publish(load_settings(), run_id, int(master_version)),
        op_kwargs={"run_id": "{{ run_id }}", "master_version": MASTER_VERSION},
    )
    expire = PythonOperator(task_id="expire_speed_rows", python_callable=lambda: cycle.expire(load_settings()))
    maintain = PythonOperator(task_id="maintenance", python_callable=lambda: cycle.maintain(load_settings()))

    snapshot >> views >> training_set >> train >> publish >> expire >> maintain
