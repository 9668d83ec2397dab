"""Benchmark: batch-view recompute by this job vs a hand-written PySpark job vs DuckDB, on one snapshot.

    python bench/batch_views.py [--sizes 1000000 10000000] [--repeat 2]

For each size a master table of sample events is written once; then, on that
same snapshot, each contender computes every view of the sample pipeline and
writes its result:

* ``lambdaflow``: ``batch_layer.views.recompute_views`` (compiled views, dedupe,
  Spark Parquet then one Delta commit per view);
* ``pyspark-hand``: the same aggregates written by hand with ``groupBy``, plain
  Parquet output (the baseline a Spark developer would write);
* ``duckdb``: the same aggregates in SQL, in process, over the snapshot's files.

Times are the best of ``--repeat`` runs. Ratios are against ``pyspark-hand`` of
the same size and run, because absolute times on a shared machine are noise.
Results go to ``bench/results/batch_views.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batch_layer.views import recompute_views
from lambdaflow.config import LocalStorage, load_settings
from lambdaflow.contracts.master import events_table, to_master_rows
from lambdaflow.sample_data import generate
from lambdaflow.spark import get_spark

RESULTS = ROOT / "bench" / "results"
CHUNK = 1_000_000


def hand_written_spark(spark, files: list[str], base: str, out: str) -> None:
    """The sample pipeline's views, written directly in PySpark (no compiler)."""
    from pyspark.sql import functions as F

    ev = spark.read.option("basePath", base).parquet(*files).dropDuplicates(["event_id"]).cache()
    hour = F.timestamp_seconds(F.floor(F.unix_seconds("event_time") / 3600) * 3600).alias("_bucket")
    day = F.timestamp_seconds(F.floor(F.unix_seconds("event_time") / 86400) * 86400).alias("_bucket")
    outputs = {
        "account_hourly": ev.groupBy("account_id", hour).agg(
            F.count("*").alias("txn_count"),
            F.sum("amount").alias("amount_sum"),
            F.max("amount").alias("amount_max"),
            F.avg("amount").alias("amount_mean"),
            F.stddev_samp("amount").alias("amount_std"),
        ),
        "account_online_hourly": ev.where("channel = 'online'")
        .groupBy("account_id", hour)
        .agg(F.count("*").alias("txn_count"), F.min("amount").alias("amount_min")),
        "account_profile": ev.groupBy("account_id").agg(
            F.count("*").alias("txn_count"),
            F.avg("amount").alias("amount_mean"),
            F.stddev_samp("amount").alias("amount_std"),
            F.max_by("country", "event_time").alias("last_country"),
            F.max("event_time").alias("last_seen"),
        ),
        "merchant_daily": ev.groupBy("merchant_id", day).agg(
            F.count("*").alias("txn_count"), F.sum("amount").alias("amount_sum"), F.var_samp("amount").alias("amount_var")
        ),
    }
    for name, frame in outputs.items():
        frame.write.mode("overwrite").parquet(f"{out}/{name}")
    ev.unpersist()


DUCKDB_SQL = {
    "account_hourly": """SELECT account_id, time_bucket(INTERVAL 1 HOUR, event_time) AS _bucket, count(*) AS txn_count,
        sum(amount) AS amount_sum, max(amount) AS amount_max, avg(amount) AS amount_mean, stddev_samp(amount) AS amount_std
        FROM ev GROUP BY ALL""",
    "account_online_hourly": """SELECT account_id, time_bucket(INTERVAL 1 HOUR, event_time) AS _bucket, count(*) AS txn_count,
        min(amount) AS amount_min FROM ev WHERE channel = 'online' GROUP BY ALL""",
    "account_profile": """SELECT account_id, count(*) AS txn_count, avg(amount) AS amount_mean, stddev_samp(amount) AS amount_std,
        arg_max(country, event_time) AS last_country, max(event_time) AS last_seen FROM ev GROUP BY ALL""",
    "merchant_daily": """SELECT merchant_id, time_bucket(INTERVAL 1 DAY, event_time) AS _bucket, count(*) AS txn_count,
        sum(amount) AS amount_sum, var_samp(amount) AS amount_var FROM ev GROUP BY ALL""",
}


def duckdb_views(files: list[str], out: str) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    paths = ", ".join(f"'{f.removeprefix('file://')}'" for f in files)
    con.execute(f"CREATE TEMP VIEW ev AS SELECT DISTINCT ON (event_id) * FROM read_parquet([{paths}])")
    for name, sql in DUCKDB_SQL.items():
        con.execute(f"COPY ({sql}) TO '{out}/{name}.parquet' (FORMAT parquet)")


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description="batch-view recompute benchmark")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    base_settings = load_settings()
    spark = get_spark(base_settings.profile.spark, app_name="bench-batch-views")
    results = []
    for size in args.sizes:
        work = Path(tempfile.mkdtemp(prefix=f"bench-views-{size}-"))
        profile = base_settings.profile.model_copy(update={"storage": LocalStorage(kind="local", root=str(work))})
        settings = base_settings.model_copy(update={"profile": profile})
        print(f"[{size:,}] generating and writing the master table…", flush=True)
        sample = generate(size, days=30, seed=1)
        master = events_table(settings)
        for i, start in enumerate(range(0, size, CHUNK)):
            master.append(to_master_rows(sample.events.slice(start, CHUNK), settings.pipeline.events, i + 1))
        snap = master.snapshot()
        files = snap.uris
        timings = {
            "lambdaflow": best_of(args.repeat, lambda: recompute_views(settings, spark, force=True)),
            "pyspark-hand": best_of(args.repeat, lambda: hand_written_spark(spark, files, master.uri, str(work / "hand"))),
            "duckdb": best_of(args.repeat, lambda: duckdb_views(files, str(_fresh(work / "duck")))),
        }
        base = timings["pyspark-hand"]
        row = {
            "events": size,
            "keys": int(sample.events["account_id"].unique().__len__()),
            "seconds": timings,
            "ratio_to_pyspark_hand": {k: round(v / base, 2) for k, v in timings.items()},
        }
        results.append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(work, ignore_errors=True)
    spark.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"cpus": os.cpu_count(), "repeat": args.repeat, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    (RESULTS / "batch_views.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [
        "| events | accounts | lambdaflow s | pyspark-hand s | duckdb s | lambdaflow / hand | duckdb / hand |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s, q = r["seconds"], r["ratio_to_pyspark_hand"]
        lines.append(
            f"| {r['events']:,} | {r['keys']:,} | {s['lambdaflow']:.2f} | {s['pyspark-hand']:.2f} | {s['duckdb']:.2f} | {q['lambdaflow']} | {q['duckdb']} |"
        )
    table = "\n".join(lines)
    (RESULTS / "batch_views.md").write_text(
        f"# Batch-view recompute ({meta['when']}, {meta['cpus']} cores, best of {args.repeat})\n\n{table}\n"
    )
    print(table)
    return 0


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


if __name__ == "__main__":
    sys.exit(main())
