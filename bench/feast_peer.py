"""Feast's embedded online store as a peer in bench/serving.py: same entities, same feature values, same lookups.

Runs in an environment of its own (Feast pins its own pandas, pyarrow and numpy):

    python3 -m venv /tmp/feast-venv && /tmp/feast-venv/bin/pip install feast==0.67.0
    /tmp/feast-venv/bin/python bench/feast_peer.py <features.parquet> <workdir> <lookups>

``features.parquet`` holds ``account_id`` and four numeric feature columns (bench/serving.py
writes them from the unified ``account_profile`` view). The script loads them into Feast's
SQLite online store (local provider, ``write_to_online_store``), times ``get_online_features``
for one key and for 100 keys in process, and prints one JSON line with p50/p99 in milliseconds.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3), "n": len(samples)}


def main() -> int:
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.repo_config import RegistryConfig, RepoConfig
    from feast.types import Float64

    source_path, work, lookups = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    work.mkdir(parents=True, exist_ok=True)
    frame = pd.read_parquet(source_path)
    names = [c for c in frame.columns if c != "account_id"]
    frame[names] = frame[names].astype("float64")
    frame["event_timestamp"] = pd.Timestamp(datetime.now(timezone.utc) - timedelta(minutes=5))
    data = work / "features.parquet"
    frame.to_parquet(data, index=False)
    config = RepoConfig(  # absolute paths: Feast resolves relative ones against different directories
        project="bench",
        provider="local",
        registry=RegistryConfig(path=str(work / "registry.db"), cache_ttl_seconds=0),
        online_store=SqliteOnlineStoreConfig(path=str(work / "online.db")),
        repo_path=str(work),
    )
    store = FeatureStore(repo_path=str(work), config=config)
    account = Entity(name="account", join_keys=["account_id"], value_type=ValueType.STRING)
    view = FeatureView(
        name="account_profile",
        entities=[account],
        ttl=timedelta(days=3650),
        schema=[Field(name=n, dtype=Float64) for n in names],
        online=True,
        source=FileSource(name="account_profile_source", path=str(data), timestamp_field="event_timestamp"),
    )
    store.apply([account, view])
    t0 = time.perf_counter()
    store.write_to_online_store(feature_view_name="account_profile", df=frame)
    load_seconds = time.perf_counter() - t0
    features = [f"account_profile:{n}" for n in names]
    keys = frame["account_id"].tolist()
    rng = np.random.default_rng(1)
    picks = [keys[i] for i in rng.integers(0, len(keys), lookups)]
    batches = [[keys[i] for i in rng.integers(0, len(keys), 100)] for _ in range(max(lookups // 10, 20))]
    got = store.get_online_features(features=features, entity_rows=[{"account_id": picks[0]}]).to_dict()
    assert got["account_id"] == [picks[0]] and got[names[0]][0] is not None, got  # the values are there
    point, many = [], []
    for k in picks:
        t = time.perf_counter()
        store.get_online_features(features=features, entity_rows=[{"account_id": k}]).to_dict()
        point.append(time.perf_counter() - t)
    for batch in batches:
        t = time.perf_counter()
        store.get_online_features(features=features, entity_rows=[{"account_id": k} for k in batch]).to_dict()
        many.append(time.perf_counter() - t)
    import feast

    out = {"feast": feast.__version__, "keys": len(keys), "load_s": round(load_seconds, 2)}
    out |= {"point": percentiles(point), "batch100": percentiles(many)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
