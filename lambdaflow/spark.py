"""The Spark session every batch job uses, configured from the profile."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from lambdaflow.config import SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: Settings every session gets, whatever the profile says (DESIGN §6, §8):
#: UTC session time and microsecond Parquet timestamps (INT96 has no min/max stats).
REQUIRED_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # Partition values are typed by the table schema, never guessed from directory names.
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
}


def get_spark(config: SparkConfig, app_name: str = "lambdaflow", master: str | None = None) -> SparkSession:
    """Create (or reuse) the Spark session for a job.

    Args:
        config: the profile's Spark section.
        app_name: shown in the Spark UI and history.
        master: overrides the profile's master (``spark-submit --master`` already set it).
    """
    from pyspark.sql import SparkSession

    # Executors must run the same interpreter as the driver (the project virtualenv).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if master is None and config.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # one machine: no need to guess a network address
    builder = SparkSession.builder.appName(app_name)
    if master or "spark.master" not in os.environ.get("PYSPARK_SUBMIT_ARGS", ""):
        builder = builder.master(master or config.master)
    for key, value in {**{k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in config.conf.items()}, **REQUIRED_CONF}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
