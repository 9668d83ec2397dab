"""A Spark standalone cluster on one machine: one master and one worker, started with pyspark's ``spark-class``.

Jobs reach it with ``spark-submit --master spark://127.0.0.1:<port>`` (the batch DAG's
``SparkSubmitOperator``, ``lambdaflow batch run``). Master, worker and their web UIs bind
to loopback (``SPARK_LOCAL_IP``): a standalone master accepts any application, so it must
not be reachable from elsewhere.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from lambdaflow.config import ProfileConfig
from lambdaflow.services import jvm
from lambdaflow.services.process import ServiceRecord, free_port, record_process, spawn, state_dir, wait_until

__all__ = ["spark_env", "spark_home", "start_master", "start_worker"]


def spark_home() -> Path:
    """pyspark's installation, which carries ``bin/spark-class`` and ``bin/spark-submit``."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def spark_env(profile: ProfileConfig) -> dict[str, str]:
    """Environment of the master, the worker and its executors."""
    home = state_dir(profile) / "spark"
    return {
        **os.environ,
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(home / "logs"),
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",  # no REST submission port: jobs come through spark-submit
        "PYSPARK_PYTHON": sys.executable,  # executors run the project's interpreter
        "JAVA_HOME": str(Path(jvm.java(17)).resolve().parents[1]),
    }


def _master_json(webui: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{webui}/json/", timeout=2) as answer:
        return dict(json.load(answer))


def start_master(profile: ProfileConfig) -> ServiceRecord:
    """Start the master at the profile's ``spark.master`` port and wait until it is ALIVE."""
    port = urlparse(profile.spark.master).port
    assert port is not None  # checked by SparkConfig
    webui = free_port()
    cmd = [str(spark_home() / "bin" / "spark-class"), "org.apache.spark.deploy.master.Master"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--webui-port", str(webui)]
    log = state_dir(profile) / "spark-master.log"
    proc = spawn(cmd, log, spark_env(profile))
    waited = wait_until("spark-master", lambda: _master_json(webui).get("status") == "ALIVE", proc, log, 90, "master not ALIVE")
    return record_process("spark-master", proc, cmd, log, profile.spark.master, waited, webui=f"http://127.0.0.1:{webui}")


def start_worker(profile: ProfileConfig, master: ServiceRecord) -> ServiceRecord:
    """Start one worker and wait until the master counts it alive."""
    spark = profile.spark
    work = state_dir(profile) / "spark" / "work"
    work.mkdir(parents=True, exist_ok=True)
    cmd = [str(spark_home() / "bin" / "spark-class"), "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1"]
    cmd += ["--cores", str(spark.worker_cores), "--memory", spark.worker_memory, "--webui-port", str(free_port())]
    cmd += ["--work-dir", str(work), spark.master]
    log = state_dir(profile) / "spark-worker.log"
    proc = spawn(cmd, log, spark_env(profile))
    webui = int(master.extra["webui"].rsplit(":", 1)[1])
    waited = wait_until("spark-worker", lambda: int(str(_master_json(webui).get("aliveworkers", 0))) >= 1, proc, log, 90, "not registered")
    return record_process("spark-worker", proc, cmd, log, spark.master, waited)
