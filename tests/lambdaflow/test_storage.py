"""Small files under the storage root, locally and over WebHDFS (against a stand-in WebHDFS server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambdaflow.config import HdfsStorage, LocalStorage, load_profile
from lambdaflow.contracts.paths import table_uri
from lambdaflow.storage import LocalFiles, StorageError, WebHdfsFiles, files
from tests.conftest import ROOT
from tests.lambdaflow.webhdfs_stub import serve


@pytest.fixture
def webhdfs(tmp_path: Path):
    server, url = serve(tmp_path / "namenode")
    yield url, tmp_path / "namenode"
    server.shutdown()


@pytest.fixture(params=["local", "webhdfs"])
def backend(request, tmp_path: Path, webhdfs):
    if request.param == "local":
        return LocalFiles(LocalStorage(kind="local", root=str(tmp_path / "local")))
    url, _ = webhdfs
    return WebHdfsFiles(HdfsStorage(kind="hdfs", root="hdfs://namenode:8020/lambdaflow", webhdfs_url=url, user="lambdaflow"))


def test_write_read_list_delete(backend) -> None:
    backend.write_bytes("plots/evaluation-v1.png", b"\x89PNG...")
    backend.write_bytes("plots/evaluation-v1.png", b"\x89PNG v2")  # overwrite
    backend.write_bytes("reports/accuracy.json", b"{}")
    assert backend.read_bytes("plots/evaluation-v1.png") == b"\x89PNG v2"
    assert backend.exists("plots/evaluation-v1.png") and not backend.exists("plots/none.png")
    assert backend.list("plots") == ["evaluation-v1.png"] and backend.list("nowhere") == []
    assert backend.delete("plots/evaluation-v1.png") and not backend.delete("plots/evaluation-v1.png")
    assert backend.delete("reports", recursive=True) and backend.list("reports") == []
    with pytest.raises(StorageError):
        backend.read_bytes("plots/evaluation-v1.png")


def test_paths_cannot_escape_the_root(backend) -> None:
    with pytest.raises(StorageError, match="leaves the storage root"):
        backend.write_bytes("../outside", b"x")


def test_webhdfs_writes_land_under_the_hdfs_root(webhdfs) -> None:
    url, namenode = webhdfs
    store = WebHdfsFiles(HdfsStorage(kind="hdfs", root="hdfs://namenode:8020/lambdaflow", webhdfs_url=url))
    store.write_bytes("models/v1/booster.ubj", b"abc")
    assert (namenode / "lambdaflow/models/v1/booster.ubj").read_bytes() == b"abc"
    assert store.uri("models/v1/booster.ubj") == "hdfs://namenode:8020/lambdaflow/models/v1/booster.ubj"


def test_hdfs_paths_everywhere_a_file_path_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAMBDAFLOW_HDFS_ROOT", raising=False)
    cluster = load_profile(ROOT / "conf/profiles/cluster.yaml")
    assert table_uri(cluster, "master/events") == "hdfs://namenode:8020/lambdaflow/master/events"
    assert isinstance(files(cluster), WebHdfsFiles)
    assert files(cluster).uri("plots/x.png") == "hdfs://namenode:8020/lambdaflow/plots/x.png"
