"""Small files under the storage root (plots, reports, state), on local disk or on HDFS through WebHDFS.

Tables go through delta-rs, which reaches ``hdfs://`` natively; this module is
for everything else. Paths are relative to the storage root, so callers never
spell ``file://`` or ``hdfs://`` themselves.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import urlparse

from lambdaflow.config import HdfsStorage, LocalStorage, ProfileConfig
from lambdaflow.contracts.paths import local_path
from lambdaflow.errors import StorageError


class Files(Protocol):
    """What every backend offers, with paths relative to the storage root."""

    def write_bytes(self, path: str, data: bytes) -> None: ...
    def read_bytes(self, path: str) -> bytes: ...
    def exists(self, path: str) -> bool: ...
    def list(self, path: str) -> list[str]: ...
    def delete(self, path: str, recursive: bool = False) -> bool: ...
    def uri(self, path: str) -> str: ...


def _clean(path: str) -> str:
    """A relative path with no way out of the root."""
    parts = [p for p in PurePosixPath(path.strip("/")).parts if p not in ("", ".")]
    if ".." in parts:
        raise StorageError(f"{path!r} leaves the storage root")
    return "/".join(parts)


class LocalFiles:
    """Files in a local directory."""

    def __init__(self, storage: LocalStorage) -> None:
        self.root = local_path(storage.uri)

    def _path(self, path: str) -> Path:
        return self.root / _clean(path)

    def write_bytes(self, path: str, data: bytes) -> None:
        target = self._path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)  # readers never see half a file

    def read_bytes(self, path: str) -> bytes:
        try:
            return self._path(path).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {self.uri(path)}: {exc}") from exc

    def exists(self, path: str) -> bool:
        return self._path(path).exists()

    def list(self, path: str) -> list[str]:
        folder = self._path(path)
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def delete(self, path: str, recursive: bool = False) -> bool:
        import shutil

        target = self._path(path)
        if not target.exists():
            return False
        if target.is_dir():
            if not recursive:
                raise StorageError(f"{self.uri(path)} is a directory: pass recursive=True")
            shutil.rmtree(target)
        else:
            target.unlink()
        return True

    def uri(self, path: str) -> str:
        return self._path(path).as_uri()


class WebHdfsFiles:
    """Files on HDFS through the namenode's WebHDFS REST API (the ``hdfs`` package)."""

    def __init__(self, storage: HdfsStorage) -> None:
        from hdfs import InsecureClient

        self.storage = storage
        self.base = urlparse(storage.root).path.rstrip("/") or "/"
        self.client = InsecureClient(storage.webhdfs_url, user=storage.user)

    def _path(self, path: str) -> str:
        rel = _clean(path)
        return f"{self.base}/{rel}" if rel else self.base

    def write_bytes(self, path: str, data: bytes) -> None:
        from hdfs.util import HdfsError

        try:
            self.client.write(self._path(path), data=data, overwrite=True)
        except HdfsError as exc:
            raise StorageError(f"cannot write {self.uri(path)}: {exc}") from exc

    def read_bytes(self, path: str) -> bytes:
        from hdfs.util import HdfsError

        try:
            with self.client.read(self._path(path)) as reader:
                return reader.read()
        except HdfsError as exc:
            raise StorageError(f"cannot read {self.uri(path)}: {exc}") from exc

    def exists(self, path: str) -> bool:
        return self.client.status(self._path(path), strict=False) is not None

    def list(self, path: str) -> list[str]:
        if not self.exists(path):
            return []
        return sorted(self.client.list(self._path(path)))

    def delete(self, path: str, recursive: bool = False) -> bool:
        from hdfs.util import HdfsError

        try:
            return bool(self.client.delete(self._path(path), recursive=recursive))
        except HdfsError as exc:
            raise StorageError(f"cannot delete {self.uri(path)}: {exc}") from exc

    def uri(self, path: str) -> str:
        rel = _clean(path)
        return f"{self.storage.uri}/{rel}" if rel else self.storage.uri


def files(profile: ProfileConfig) -> Files:
    """The small-file backend of a profile's storage root."""
    storage = profile.storage
    return LocalFiles(storage) if isinstance(storage, LocalStorage) else WebHdfsFiles(storage)
