"""Benchmark: point lookups and a top-N on the unified view, embedded engine and REST API, beside the batch-table floor.

    python bench/serving.py [--sizes 1000000 10000000] [--lookups 300]

For each size (≥ 100k accounts), 90% of the events are ingested as earlier
micro-batches and absorbed by a Spark batch run (W); the last 10% stay as
speed partials (written exactly as the speed layer writes them). Then, on the
same data and in the same run:

* ``unified``: the serving SQL (batch ⊕ speed after W, finalised) on DuckDB;
* ``batch-only``: the same query shape on the batch table alone — the floor;
* ``api``: ``GET /views/account_profile/{key}`` over real HTTP (uvicorn).

Reported: p50 and p99 latency in milliseconds and the ratio to the floor.
Results go to ``bench/results/serving.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batch_layer.views import recompute_views
from lambdaflow.config import LocalStorage, load_settings
from lambdaflow.contracts.master import events_table, to_master_rows
from lambdaflow.contracts.speed import SpeedTables
from lambdaflow.sample_data import generate
from lambdaflow.schemas import INGEST_SEQ
from lambdaflow.spark import get_spark
from lambdaflow.sql import to_duckdb
from lambdaflow.views import compile_views
from serving_layer.engine import open_session

RESULTS = ROOT / "bench" / "results"
BATCHES = 20


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3), "n": len(samples)}


def timed(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def prepare(settings, spark, size: int) -> list[str]:
    sample = generate(size, days=30, seed=2, accounts=max(140_000, size // 40)).events  # ≥ 100k accounts with events
    master = events_table(settings)
    speed = SpeedTables(settings)
    views = compile_views(settings.pipeline)
    cut = int(size * 0.9)
    per = -(-size // BATCHES)
    for seq, start in enumerate(range(0, size, per), start=1):
        rows = to_master_rows(sample.slice(start, per), settings.pipeline.events, seq)
        master.append(rows)
        if start >= cut:  # the speed layer's share: partials tagged with the micro-batch
            for name, view in views.items():
                part = view.partials_arrow(rows)
                speed.speed[name].append(part.append_column(INGEST_SEQ, pa.array(np.full(part.num_rows, seq, np.int64))))
        if start + per == cut or (start < cut <= start + per):
            recompute_views(settings, spark)  # W = this batch
    return sample.column("account_id").unique().to_pylist()


def serve_in_thread(settings, port: int):
    import uvicorn

    from serving_layer.api import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--lookups", type=int, default=300)
    args = parser.parse_args()
    base = load_settings()
    spark = get_spark(base.profile.spark, app_name="bench-serving")
    results = []
    for size in args.sizes:
        work = Path(tempfile.mkdtemp(prefix=f"bench-serving-{size}-"))
        settings = base.model_copy(
            update={"profile": base.profile.model_copy(update={"storage": LocalStorage(kind="local", root=str(work))})}
        )
        print(f"[{size:,}] preparing master, batch views and speed partials…", flush=True)
        keys = prepare(settings, spark, size)
        rng = random.Random(1)
        picks = [rng.choice(keys) for _ in range(args.lookups)]
        session = open_session(settings)
        view = compile_views(settings.pipeline)["account_profile"]
        floor_sql = to_duckdb(view.finalize_sql(view.merge_sql('SELECT * FROM "batch_account_profile"')))
        session.connection.execute(f'CREATE VIEW "batch_only_account_profile" AS {floor_sql}')
        con = session.connection
        point = 'SELECT * FROM "{v}" WHERE "account_id" = ?'
        top = 'SELECT "account_id", "txn_count" FROM "{v}" ORDER BY "txn_count" DESC LIMIT 10'
        row: dict[str, object] = {"events": size, "accounts": len(keys)}
        for label, v in (("unified", "unified_account_profile"), ("batch-only", "batch_only_account_profile")):
            con.execute(point.format(v=v), [picks[0]]).fetchall()  # warm up
            row[f"point_{label}"] = percentiles(timed(lambda i, v=v: con.execute(point.format(v=v), [picks[i]]).fetchall(), len(picks)))
            row[f"topn_{label}"] = percentiles(timed(lambda i, v=v: con.execute(top.format(v=v)).fetchall(), 20))
        import httpx

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server, thread = serve_in_thread(settings, port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            client.get(f"/views/account_profile/{picks[0]}")
            row["point_api"] = percentiles(timed(lambda i: client.get(f"/views/account_profile/{picks[i]}").raise_for_status(), len(picks)))
        server.should_exit = True
        thread.join(timeout=10)
        floor = row["point_batch-only"]["p50_ms"]  # type: ignore[index]
        row["ratio_p50_to_floor"] = {
            "point_unified": round(row["point_unified"]["p50_ms"] / floor, 2),  # type: ignore[index]
            "point_api": round(row["point_api"]["p50_ms"] / floor, 2),  # type: ignore[index]
            "topn_unified": round(row["topn_unified"]["p50_ms"] / row["topn_batch-only"]["p50_ms"], 2),  # type: ignore[index]
        }
        print(json.dumps(row), flush=True)
        results.append(row)
        shutil.rmtree(work, ignore_errors=True)
    spark.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "lookups": args.lookups}
    (RESULTS / "serving.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [
        "| events | accounts | query | batch-only (floor) p50 / p99 ms | unified p50 / p99 ms | REST API p50 / p99 ms | unified / floor (p50) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        f, u, a = r["point_batch-only"], r["point_unified"], r["point_api"]
        lines.append(
            f"| {r['events']:,} | {r['accounts']:,} | point lookup | {f['p50_ms']} / {f['p99_ms']} | {u['p50_ms']} / {u['p99_ms']} | {a['p50_ms']} / {a['p99_ms']} | {r['ratio_p50_to_floor']['point_unified']} |"
        )
        f, u = r["topn_batch-only"], r["topn_unified"]
        lines.append(
            f"| {r['events']:,} | {r['accounts']:,} | top 10 | {f['p50_ms']} / {f['p99_ms']} | {u['p50_ms']} / {u['p99_ms']} | — | {r['ratio_p50_to_floor']['topn_unified']} |"
        )
    table = "\n".join(lines)
    (RESULTS / "serving.md").write_text(f"# Serving latency ({meta['when']})\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
