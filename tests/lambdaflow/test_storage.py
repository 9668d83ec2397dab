"""Small files under the storage root, locally and over WebHDFS against the real NameNode of the pseudo stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambdaflow.config import HdfsStorage, LocalStorage, load_profile
from lambdaflow.contracts.paths import table_uri
from lambdaflow.storage import LocalFiles, StorageError, WebHdfsFiles, files
from tests.conftest import ROOT, PseudoStack


def _hdfs_files(pseudo: PseudoStack, folder: str) -> WebHdfsFiles:
    storage = pseudo.settings.profile.storage
    assert isinstance(storage, HdfsStorage)
    return WebHdfsFiles(storage.model_copy(update={"root": f"{storage.root}/{folder}"}))


@pytest.fixture(params=["local", "webhdfs"])
def backend(request, tmp_path: Path):
    if request.param == "local":
        return LocalFiles(LocalStorage(kind="local", root=str(tmp_path / "local")))
    return _hdfs_files(request.getfixturevalue("pseudo"), f"files-{tmp_path.name}")


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


def test_webhdfs_writes_are_read_back_over_hdfs_rpc(pseudo: PseudoStack) -> None:
    """A file written over WebHDFS (HTTP) is the file delta-rs's HDFS client (RPC) reads at its hdfs:// URI."""
    from lambdaflow.contracts.paths import filesystem

    store = _hdfs_files(pseudo, "files-rpc")
    store.write_bytes("models/v1/booster.ubj", b"abc")
    uri = store.uri("models/v1/booster.ubj")
    assert uri == f"{pseudo.hdfs_root}/files-rpc/models/v1/booster.ubj"
    fs, base = filesystem(uri.rsplit("/", 1)[0])
    with fs.open_input_file("booster.ubj") as handle:
        assert handle.read() == b"abc"


def test_hdfs_paths_everywhere_a_file_path_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAMBDAFLOW_HDFS_ROOT", raising=False)
    cluster = load_profile(ROOT / "conf/profiles/cluster.yaml")
    assert table_uri(cluster, "master/events") == "hdfs://namenode:8020/lambdaflow/master/events"
    assert isinstance(files(cluster), WebHdfsFiles)
    assert files(cluster).uri("plots/x.png") == "hdfs://namenode:8020/lambdaflow/plots/x.png"
