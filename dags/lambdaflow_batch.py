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
import json
import os
import sys
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batch_layer import cycle
from lambdaflow.config import load_settings
from lambdaflow.spark import delta_conf

SETTINGS = load_settings()
PROFILE = SETTINGS.profile
JOBS = ROOT / "batch_layer" / "jobs"
SPARK_CONN = "lambdaflow_spark"
# The Spark master comes from the profile; an Airflow connection of the same id overrides it.
os.environ.setdefault(f"AIRFLOW_CONN_{SPARK_CONN.upper()}", json.dumps({"conn_type": "spark", "host": PROFILE.spark.master}))
# spark-submit ships with pyspark, next to this interpreter.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
# The job resolves the same profile: every LAMBDAFLOW_* variable it may expand (home, ports) goes along, but the API token.
PASS_THROUGH = tuple(k for k in os.environ if k.startswith("LAMBDAFLOW_") and k != "LAMBDAFLOW_API_TOKEN") + ("PATH",)
MASTER_VERSION = "{{ ti.xcom_pull(task_ids='snapshot')['master_version'] }}"


def _spark(task_id: str, job: str, *args: str) -> SparkSubmitOperator:
    return SparkSubmitOperator(
        task_id=task_id,
        application=str(JOBS / job),
        application_args=list(args),
        conn_id=SPARK_CONN,
        deploy_mode=PROFILE.spark.deploy_mode if not PROFILE.spark.master.startswith("local") else None,
        conf={str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in PROFILE.spark.conf.items()}
        | {"spark.pyspark.python": sys.executable, "spark.pyspark.driver.python": sys.executable}
        | delta_conf(PROFILE.spark),
        env_vars={k: os.environ[k] for k in PASS_THROUGH if k in os.environ} | {"PYTHONPATH": str(ROOT)},
        name=f"lambdaflow-{task_id}",
        verbose=False,
    )


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
    views = _spark("recompute_views", "recompute_views.py", "--master-version", MASTER_VERSION)
    training_set = _spark("build_training_set", "build_training_set.py", "--master-version", MASTER_VERSION)
    train = _spark("train_evaluate_promote", "train_model.py")
    publish = PythonOperator(
        task_id="publish_watermark",
        python_callable=lambda run_id, master_version: cycle.publish(load_settings(), run_id, int(master_version)),
        op_kwargs={"run_id": "{{ run_id }}", "master_version": MASTER_VERSION},
    )
    expire = PythonOperator(task_id="expire_speed_rows", python_callable=lambda: cycle.expire(load_settings()))
    maintain = PythonOperator(task_id="maintenance", python_callable=lambda: cycle.maintain(load_settings()))

    snapshot >> views >> training_set >> train >> publish >> expire >> maintain
