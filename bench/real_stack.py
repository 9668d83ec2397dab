"""The real stack's cost on one machine: downloading its jars, and starting each service.

* the JVM artefacts of deploy/jvm/pom.xml fetched into an empty Maven repository and JVM cache (what a
  fresh machine pays), then fetched again (a warm re-run);
* ``lambdaflow services up --profile pseudo`` from scratch (formatting HDFS and Kafka included) and again
  on the same home, per service, ``--rounds`` times;
* beside them, in the same run, the baseline the pseudo stack replaces: Tansu's start-up (the embedded
  default's broker) and Apache Kafka's alone — the figures that choose the default broker.

    python bench/real_stack.py [--rounds 3] [--skip-fresh-download]

Writes bench/results/real_stack.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lambdaflow import services
from lambdaflow.config import EmbeddedKafka, LocalStorage, ProfileConfig, load_settings
from lambdaflow.services import jvm

RESULTS = ROOT / "bench" / "results"
PORTS = ("HDFS", "WEBHDFS", "KAFKA", "SPARK", "TRINO", "API", "AIRFLOW")


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def fetch_figures(fresh: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if fresh:
        scratch = Path(tempfile.mkdtemp(prefix="lf-fetch-"))
        os.environ["LAMBDAFLOW_MAVEN_REPO"] = str(scratch / "m2")
        os.environ["LAMBDAFLOW_JVM_CACHE"] = str(scratch / "jvm")
        try:
            cold = jvm.fetch()
            warm = jvm.fetch()
            out["fresh"] = {
                "seconds": round(cold.seconds, 1),
                "maven_repo_mb": round(_du(scratch / "m2") / 1e6),
                "jvm_cache_mb": round(_du(scratch / "jvm") / 1e6),
            }
            out["warm"] = {"seconds": round(warm.seconds, 2)}
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            os.environ.pop("LAMBDAFLOW_MAVEN_REPO")
            os.environ.pop("LAMBDAFLOW_JVM_CACHE")
    out["warm_default_caches"] = {"seconds": round(jvm.fetch().seconds, 2)}
    return out


def _profile(home: Path) -> Any:
    os.environ["LAMBDAFLOW_PSEUDO_HOME"] = str(home)
    for name in PORTS:
        os.environ[f"LAMBDAFLOW_{name}_PORT"] = str(services.free_port())
    return load_settings(profile="pseudo", conf_dir=ROOT / "conf").profile


def startup_figures(rounds: int) -> dict[str, Any]:
    per: dict[str, dict[str, list[float]]] = {"cold": {}, "warm": {}}
    totals: dict[str, list[float]] = {"cold": [], "warm": []}
    for _ in range(rounds):
        home = Path(tempfile.mkdtemp(prefix="lf-pseudo-"))
        profile = _profile(home)
        try:
            for kind in ("cold", "warm"):  # cold: formats HDFS and Kafka; warm: the same home again
                started = time.monotonic()
                state = services.up(profile)
                totals[kind].append(time.monotonic() - started)
                for name, record in state.items():
                    per[kind].setdefault(name, []).append(record.ready_seconds)
                services.down(profile)
        finally:
            services.down(profile)
            shutil.rmtree(home, ignore_errors=True)
    summary = {kind: {name: round(statistics.median(v), 1) for name, v in per[kind].items()} for kind in per}
    for kind in totals:
        summary[kind]["all (sequential)"] = round(statistics.median(totals[kind]), 1)
    return summary


def broker_figures(rounds: int) -> dict[str, float]:
    """Tansu (the embedded default) and Apache Kafka alone, each from an empty home."""
    out: dict[str, list[float]] = {"tansu": [], "apache kafka": []}
    for _ in range(rounds):
        for broker, key in (("tansu", "tansu"), ("apache", "apache kafka")):
            home = Path(tempfile.mkdtemp(prefix="lf-broker-"))
            profile = ProfileConfig(storage=LocalStorage(kind="local", root=str(home)), kafka=EmbeddedKafka(kind="embedded", broker=broker))
            try:
                out[key].append(services.up(profile)["broker"].ready_seconds)
            finally:
                services.down(profile)
                shutil.rmtree(home, ignore_errors=True)
    return {k: round(statistics.median(v), 2) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-fresh-download", action="store_true")
    args = parser.parse_args()
    print("fetching the JVM artefacts…", flush=True)
    fetched = fetch_figures(not args.skip_fresh_download)
    print(json.dumps(fetched), flush=True)
    print("broker start-up, Tansu beside Apache Kafka…", flush=True)
    brokers = broker_figures(args.rounds)
    print(json.dumps(brokers), flush=True)
    print("the pseudo stack, cold and warm…", flush=True)
    startup = startup_figures(args.rounds)
    print(json.dumps(startup), flush=True)
    result = {"fetch": fetched, "brokers": brokers, "startup": startup, "rounds": args.rounds, "cpus": os.cpu_count()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "real_stack.json").write_text(json.dumps(result, indent=2))
    lines = ["# The real stack: download and start-up", "", f"Median of {args.rounds} rounds on {os.cpu_count()} cores.", ""]
    if "fresh" in fetched:
        f = fetched["fresh"]
        lines += ["| fetch (deploy/jvm/pom.xml) | seconds | Maven repository | JVM cache |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| fresh machine (empty caches) | {f['seconds']} | {f['maven_repo_mb']} MB | {f['jvm_cache_mb']} MB |"]
        lines += [f"| warm re-run | {fetched['warm']['seconds']} | — | — |", ""]
    lines += ["| broker alone, ready in (s) | median |", "| --- | ---: |"] + [f"| {k} | {v} |" for k, v in brokers.items()] + [""]
    lines += ["| service (pseudo profile) | cold start (s) | warm start (s) |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {startup['cold'].get(name, '')} | {startup['warm'].get(name, '')} |" for name in startup["cold"]]
    (RESULTS / "real_stack.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
