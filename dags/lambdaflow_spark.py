"""How the Lambdaflow DAGs submit Spark jobs: one ``SparkSubmitOperator`` factory for every DAG (no DAG here).

The Spark master comes from the profile; an Airflow connection of the same id overrides it. The job resolves
the same profile: every ``LAMBDAFLOW_*`` variable it may expand (home, ports) goes along, but the API token.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lambdaflow.config import load_settings
from lambdaflow.spark import delta_conf

PROFILE = load_settings().profile
JOBS = ROOT / "batch_layer" / "jobs"
SPARK_CONN = "lambdaflow_spark"
os.environ.setdefault(f"AIRFLOW_CONN_{SPARK_CONN.upper()}", json.dumps({"conn_type": "spark", "host": PROFILE.spark.master}))
# spark-submit ships with pyspark, next to this interpreter.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
PASS_THROUGH = tuple(k for k in os.environ if k.startswith("LAMBDAFLOW_") and k != "LAMBDAFLOW_API_TOKEN") + ("PATH",)


def spark_task(task_id: str, job: str, *args: str) -> SparkSubmitOperator:
    """A task running ``batch_layer/jobs/<job>`` with ``args`` on the profile's Spark master."""
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
