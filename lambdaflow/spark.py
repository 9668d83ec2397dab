"""The Spark session every batch job uses, configured from the profile, and how a finished job leaves."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, NoReturn

from lambdaflow.config import SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row, SparkSession

__all__ = ["REQUIRED_CONF", "delta_conf", "finish", "first_row", "get_spark"]

#: Settings every session gets, whatever the profile says (docs/architecture.md §7, §9):
#: UTC session time and microsecond Parquet timestamps (INT96 has no min/max stats).
REQUIRED_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # Partition values are typed by the table schema, never guessed from directory names.
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
}


def delta_conf(config: SparkConfig) -> dict[str, str]:
    """Spark settings for the native Delta reader and writer, when the profile asks for them (``spark.delta_jars``).

    Tables are still committed by delta-rs (docs/architecture.md §7); the jars let Spark read them with
    ``format("delta")`` and let a data engineer's own jobs use Delta natively.
    """
    if not config.delta_jars:
        return {}
    from lambdaflow.services.jvm import classpath

    return {
        "spark.jars": classpath("delta-spark").replace(os.pathsep, ","),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
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
    profile_conf = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in config.conf.items()}
    for key, value in {**profile_conf, **delta_conf(config), **REQUIRED_CONF}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def finish(code: int) -> NoReturn:
    """Stop Spark (if this process started it), flush, and exit without interpreter teardown.

    Used by every process entry point once its work is committed: spark-submit
    jobs, the Spark commands of the CLI and the speed layer. Native thread pools
    (Arrow, delta-rs, the JVM gateway) can abort a process while Python tears
    down (``terminate called without an active exception``, exit 134), which a
    scheduler would report as a failed job and retry. Leaving with ``os._exit``
    after flushing makes the exit code the command's own.
    """
    try:
        if "pyspark.sql" in sys.modules:  # never import pyspark just to stop it (the speed layer has none)
            from pyspark.sql import SparkSession

            active = SparkSession.getActiveSession()
            if active is not None:
                active.stop()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def first_row(frame: DataFrame) -> Row:
    """The first row of a one-row result (a global aggregate always has one)."""
    row = frame.first()
    if row is None:
        raise RuntimeError("expected a one-row aggregate, Spark returned no row")
    return row
