"""A pseudo-distributed HDFS: one NameNode and one DataNode on loopback, from the jars of ``deploy/jvm/hadoop``.

The NameNode listens at the port of the profile's ``storage.root`` (RPC, what delta-rs and
Spark use) and ``storage.webhdfs_url`` (HTTP: WebHDFS, for small files); the DataNode on free
loopback ports. Metadata and blocks live under ``<home>/services/hdfs`` and survive restarts;
the NameNode is formatted once, on first start. One replica, permissions off: it is one machine.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from urllib.parse import urlparse
from xml.sax.saxutils import escape

from lambdaflow.config import HdfsStorage, ProfileConfig
from lambdaflow.errors import ServiceError
from lambdaflow.services import jvm
from lambdaflow.services.process import ServiceRecord, free_port, record_process, spawn, state_dir, wait_until

__all__ = ["hdfs_conf_dir", "start_datanode", "start_namenode"]

_LOG4J = """\
log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n
log4j.logger.org.apache.hadoop.hdfs.StateChange=WARN
log4j.logger.org.apache.hadoop.hdfs.server.namenode.FSNamesystem.audit=WARN
log4j.logger.BlockStateChange=WARN
"""


def _storage(profile: ProfileConfig) -> HdfsStorage:
    storage = profile.storage
    if not isinstance(storage, HdfsStorage) or not storage.embedded:
        raise ServiceError("the profile's storage is not an embedded HDFS (storage.kind: hdfs, storage.embedded: true)")
    return storage


def hdfs_conf_dir(profile: ProfileConfig) -> Path:
    return state_dir(profile) / "hdfs" / "conf"


def _site(settings: dict[str, str]) -> str:
    props = "".join(f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n" for k, v in settings.items())
    return f'<?xml version="1.0"?>\n<configuration>\n{props}</configuration>\n'


def _write_conf(profile: ProfileConfig, storage: HdfsStorage, datanode_ports: tuple[int, int, int]) -> Path:
    home = state_dir(profile) / "hdfs"
    rpc, http = urlparse(storage.root), urlparse(storage.webhdfs_url)
    conf = hdfs_conf_dir(profile)
    conf.mkdir(parents=True, exist_ok=True)
    core = {"fs.defaultFS": f"hdfs://127.0.0.1:{rpc.port}", "hadoop.tmp.dir": str(home / "tmp")}
    data, dn_http, dn_ipc = datanode_ports
    site = {
        "dfs.replication": "1",
        "dfs.permissions.enabled": "false",
        "dfs.namenode.name.dir": str(home / "name"),
        "dfs.datanode.data.dir": str(home / "data"),
        "dfs.namenode.rpc-address": f"127.0.0.1:{rpc.port}",
        "dfs.namenode.http-address": f"127.0.0.1:{http.port}",
        "dfs.namenode.secondary.http-address": "127.0.0.1:0",
        "dfs.datanode.address": f"127.0.0.1:{data}",
        "dfs.datanode.http.address": f"127.0.0.1:{dn_http}",
        "dfs.datanode.ipc.address": f"127.0.0.1:{dn_ipc}",
        "dfs.datanode.hostname": "127.0.0.1",
        "dfs.namenode.safemode.extension": "0",  # one DataNode: nothing to wait for once it has reported
        "dfs.namenode.datanode.registration.ip-hostname-check": "false",
        "dfs.webhdfs.enabled": "true",
    }
    (conf / "core-site.xml").write_text(_site(core))
    (conf / "hdfs-site.xml").write_text(_site(site))
    (conf / "log4j.properties").write_text(_LOG4J)
    # The daemons' HTTP servers look their web apps up on the classpath; the Maven jars carry none (the
    # tarball has them under share/). Empty ones are enough for WebHDFS and JMX, which are servlets.
    for app in ("hdfs", "datanode", "secondary", "static"):
        (conf / "webapps" / app).mkdir(parents=True, exist_ok=True)
        (conf / "webapps" / app / "index.html").write_text(f"<html><body>Lambdaflow HDFS ({app})</body></html>\n")
    return conf


#: Hadoop 3.4's daemons on Java 17: WebHDFS's Jersey 1 defines classes reflectively (HTTP 500 without this).
_OPENS = "--add-opens=java.base/java.lang=ALL-UNNAMED"


def _java(profile: ProfileConfig, heap: str) -> list[str]:
    conf = hdfs_conf_dir(profile)
    logging = f"-Dlog4j.configuration=file:{conf / 'log4j.properties'}"
    return [jvm.java(17), f"-Xmx{heap}", "-XX:+UseSerialGC", _OPENS, logging, "-cp", f"{conf}:{jvm.classpath('hadoop')}"]


def _jmx(http_port: int, bean: str) -> dict[str, object]:
    url = f"http://127.0.0.1:{http_port}/jmx?qry=Hadoop:service=NameNode,name={bean}"
    with urllib.request.urlopen(url, timeout=2) as answer:
        beans = json.load(answer).get("beans", [])
    return dict(beans[0]) if beans else {}


def start_namenode(profile: ProfileConfig) -> ServiceRecord:
    """Format on first start, start the NameNode, wait until it is active.

    Raises:
        ServiceError: the jars are not fetched, formatting fails, or it does not come up.
    """
    storage = _storage(profile)
    _write_conf(profile, storage, (free_port(), free_port(), free_port()))
    java = _java(profile, "256m")
    name_dir = state_dir(profile) / "hdfs" / "name"
    if not (name_dir / "current" / "VERSION").is_file():
        done = subprocess.run(
            [*java, "org.apache.hadoop.hdfs.server.namenode.NameNode", "-format", "-nonInteractive", "-force"],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise ServiceError(f"formatting the NameNode at {name_dir} failed: {(done.stdout + done.stderr)[-800:]}")
    http = urlparse(storage.webhdfs_url).port
    assert http is not None
    cmd = [*java, "org.apache.hadoop.hdfs.server.namenode.NameNode"]
    log = state_dir(profile) / "namenode.log"
    proc = spawn(cmd, log)
    waited = wait_until("namenode", lambda: _jmx(http, "NameNodeStatus").get("State") == "active", proc, log, 90, "not active")
    return record_process("namenode", proc, cmd, log, storage.root, waited, webhdfs=storage.webhdfs_url, storage=str(name_dir))


def start_datanode(profile: ProfileConfig, namenode: ServiceRecord) -> ServiceRecord:
    """Start the DataNode and wait until the NameNode counts it live and has left safe mode."""
    storage = _storage(profile)
    http = urlparse(storage.webhdfs_url).port
    assert http is not None
    cmd = [*_java(profile, "256m"), "org.apache.hadoop.hdfs.server.datanode.DataNode"]
    log = state_dir(profile) / "datanode.log"
    proc = spawn(cmd, log)

    def ready() -> bool:
        state = _jmx(http, "FSNamesystemState")
        return int(str(state.get("NumLiveDataNodes", 0))) >= 1 and state.get("FSState") == "Operational" and not _safemode(http)

    waited = wait_until("datanode", ready, proc, log, 90, "no live DataNode at the NameNode, or still in safe mode")
    return record_process("datanode", proc, cmd, log, namenode.address, waited, storage=str(state_dir(profile) / "hdfs" / "data"))


def _safemode(http_port: int) -> bool:
    return bool(_jmx(http_port, "NameNodeInfo").get("Safemode"))
