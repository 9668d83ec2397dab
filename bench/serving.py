"""Benchmark: lookups on the unified views: the SQL path, the online index, the REST API, and Feast as a peer.

    python bench/serving.py [--sizes 1000000 10000000] [--lookups 300] [--feast-python /tmp/feast-venv/bin/python]

For each size (≥ 100k accounts), 90% of the events are ingested as earlier
micro-batches and absorbed by a Spark batch run (W); the last 10% stay as
speed partials (written exactly as the speed layer writes them). Then, on the
same data and in the same run:

* ``unified``: the serving SQL (batch ⊕ speed after W, finalised) on DuckDB;
* ``batch-only``: the same query shape on the batch table alone — the floor;
* ``api``: ``GET /views/account_profile/{key}`` over real HTTP (uvicorn), answered from the online index;
* ``online``: the online index (serving_layer/online.py) in process: a point lookup
  of the view, ``/features`` for one key and for 100 keys (the feature function over
  the index's state), its full build time (first open or a publish), its refresh time
  per speed commit (5,000 events' partials), and its memory per key;
* ``online-api``: the same three lookups over real HTTP;
* ``feast``: Feast's embedded SQLite store with the same keys and four of the same
  values (bench/feast_peer.py, in its own environment; skipped when it is absent).

Reported: p50 and p99 latency in milliseconds and ratios.
Results go to ``bench/results/serving.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import socket
import subprocess
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


def speed_commit(settings, seq: int, size: int) -> None:
    """Append one micro-batch's partials (``size`` new events of existing accounts) to every speed view, as the speed layer does."""
    events = generate(size, days=1, seed=1000 + seq, start=dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc), accounts=100_000).events
    rows = to_master_rows(events, settings.pipeline.events, seq)
    speed = SpeedTables(settings)
    for name, view in compile_views(settings.pipeline).items():
        part = view.partials_arrow(rows)
        speed.speed[name].append(part.append_column(INGEST_SEQ, pa.array(np.full(part.num_rows, seq, np.int64))))


def online_figures(settings, picks: list[str], batches: list[list[str]]) -> tuple[dict[str, object], object]:
    """The online index in process: build, memory, lookups, and refresh per speed commit."""
    import psutil

    from lambdaflow.features import FeatureFunction
    from serving_layer.lookups import feature_vectors, probe_event
    from serving_layer.refresher import OnlineIndex

    rss0 = psutil.Process().memory_info().rss
    index = OnlineIndex(settings, interval=3600)
    t0 = time.perf_counter()
    index.refresh()
    build = time.perf_counter() - t0
    snapshot = index.current()
    rss = psutil.Process().memory_info().rss - rss0
    keys = snapshot.views["account_profile"].keys
    arrow = sum(v.nbytes for v in snapshot.views.values())
    features = FeatureFunction(settings.pipeline)
    at = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
    view = snapshot.views["account_profile"]
    out: dict[str, object] = {
        "full_build_s": round(build, 2),
        "bytes_per_key": {"arrow": round(arrow / keys), "rss": round(rss / keys)},
        "rows_held": {name: v.base.rows.num_rows for name, v in snapshot.views.items()},
        "point_view": percentiles(timed(lambda i: view.rows((picks[i],)).to_pylist(), len(picks))),
        "batch100_view": percentiles(timed(lambda i: pa.concat_tables([view.rows((k,)) for k in batches[i]]).to_pylist(), len(batches))),
        "point_features": percentiles(
            timed(lambda i: feature_vectors(snapshot, features, probe_event(settings.pipeline, picks[i], {}, at)).to_pylist(), len(picks))
        ),
        "batch100_features": percentiles(
            timed(
                lambda i: feature_vectors(
                    snapshot, features, pa.concat_tables([probe_event(settings.pipeline, k, {}, at) for k in batches[i]])
                ).to_pylist(),
                len(batches),
            )
        ),
    }
    refreshes = []
    for seq in range(BATCHES + 1, BATCHES + 6):  # five speed commits of 5,000 events (one second at 5,000 events/s)
        speed_commit(settings, seq, 5000)
        t0 = time.perf_counter()
        index.refresh()
        refreshes.append(time.perf_counter() - t0)
        assert index.current().kind == "speed"
    out["speed_commit_refresh"] = percentiles(refreshes)
    return out, index


def feast_figures(feast_python: str, settings, lookups: int, work: Path) -> dict[str, object] | None:
    """Feast's embedded store on the same accounts and four of the same values, run in its own environment."""
    if not Path(feast_python).exists():
        print(f"  feast: {feast_python} not found, peer skipped (see bench/feast_peer.py)", flush=True)
        return None
    import pyarrow.parquet as pq

    session = open_session(settings)
    values = session.query('SELECT "account_id", "txn_count", "amount_mean", "amount_std", "last_seen" FROM "unified_account_profile"')
    last_seen = values.column("last_seen").cast(pa.int64())
    values = values.set_column(4, "last_seen", last_seen)
    pq.write_table(values, work / "feast-input.parquet")
    done = subprocess.run(
        [feast_python, str(ROOT / "bench/feast_peer.py"), str(work / "feast-input.parquet"), str(work / "feast"), str(lookups)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if done.returncode != 0:
        print(f"  feast failed: {done.stderr[-2000:]}", flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def serve_in_thread(settings, port: int):
    import uvicorn

    from serving_layer.api import create_app

    app = create_app(settings, server=True)  # as `lambdaflow serve` runs it
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread


def _cell(figure: object) -> str:
    return f"{figure['p50_ms']} / {figure['p99_ms']}" if isinstance(figure, dict) else "—"


def markdown(results: list[dict]) -> str:
    """One table of lookups (p50 / p99 ms, same run) and one of the index's build, refresh and memory."""
    lines = [
        "| events | accounts | lookup | batch table via SQL (floor) | SQL unified view | online index, in process | online index via REST | Feast SQLite, in process |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        o, oa, fe = r["online"], r.get("online_api", {}), r.get("feast") or {}
        head = f"| {r['events']:,} | {r['accounts']:,}"
        lines.append(
            f"{head} | view, 1 key | {_cell(r['point_batch-only'])} | {_cell(r['point_unified'])} | {_cell(o['point_view'])}"
            f" | {_cell(r['point_api'])} | {_cell(fe.get('point'))} |"
        )
        lines.append(f"{head} | view, 100 keys | — | — | {_cell(o['batch100_view'])} | — | {_cell(fe.get('batch100'))} |")
        lines.append(
            f"{head} | features computed now, 1 key | — | — | {_cell(o['point_features'])} | {_cell(oa.get('point_features'))} | — |"
        )
        lines.append(
            f"{head} | features computed now, 100 keys | — | — | {_cell(o['batch100_features'])} | {_cell(oa.get('batch100_features'))} | — |"
        )
        lines.append(f"{head} | top 10 | {_cell(r['topn_batch-only'])} | {_cell(r['topn_unified'])} | — | — | — |")
    lines += [
        "",
        "| events | full build s (first open, publish) | refresh per speed commit p50 / p99 ms | Arrow bytes per key | RSS bytes per key | rows held |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        o = r["online"]
        lines.append(
            f"| {r['events']:,} | {o['full_build_s']} | {_cell(o['speed_commit_refresh'])} | {o['bytes_per_key']['arrow']:,}"
            f" | {o['bytes_per_key']['rss']:,} | {sum(o['rows_held'].values()):,} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--feast-python", default="/tmp/feast-venv/bin/python", help="the Python of an environment with feast")
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
        batches = [[rng.choice(keys) for _ in range(100)] for _ in range(max(args.lookups // 10, 20))]
        print(f"[{size:,}] online index…", flush=True)
        online, index = online_figures(settings, picks, batches)
        row["online"] = online
        del index
        import httpx

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server, thread = serve_in_thread(settings, port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            # the API builds its index on the first request (a full build: seconds at 10M events), then serves
            client.get(f"/views/account_profile/{picks[0]}", timeout=900).raise_for_status()
            row["point_api"] = percentiles(timed(lambda i: client.get(f"/views/account_profile/{picks[i]}").raise_for_status(), len(picks)))
            row["online_api"] = {
                "point_features": percentiles(timed(lambda i: client.get(f"/features/{picks[i]}").raise_for_status(), len(picks))),
                "batch100_features": percentiles(
                    timed(lambda i: client.post("/features", json={"keys": batches[i]}).raise_for_status(), len(batches))
                ),
            }
        server.should_exit = True
        thread.join(timeout=10)
        print(f"[{size:,}] feast peer…", flush=True)
        row["feast"] = feast_figures(args.feast_python, settings, args.lookups, work)
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
    table = markdown(results)
    (RESULTS / "serving.md").write_text(f"# Serving latency ({meta['when']})\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
