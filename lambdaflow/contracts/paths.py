"""Where every table lives: one place for the names and locations under the storage root."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs

from lambdaflow.config import ProfileConfig
from lambdaflow.errors import ConfigError

__all__ = [
    "FEATURE_CONSISTENCY",
    "FEATURE_LOG",
    "MASTER_EVENTS",
    "MASTER_LABELS",
    "OFFSET_GAPS",
    "PREDICTIONS",
    "QUARANTINE",
    "RUNS",
    "TRAINING_SET",
    "batch_view",
    "existing_tables",
    "filesystem",
    "join",
    "local_home",
    "local_path",
    "speed_view",
    "sql_name",
    "table_uri",
]

#: Raw events, appended exactly once by the speed layer (the immutable master dataset).
MASTER_EVENTS = "master/events"
#: Labels (e.g. chargebacks), appended exactly once by the speed layer.
MASTER_LABELS = "master/labels"
#: Records that failed validation, with the reason and the raw bytes.
QUARANTINE = "quarantine"
#: Scores of the speed layer, one row per event.
PREDICTIONS = "predictions"
#: Point-in-time training sets built by the batch layer.
TRAINING_SET = "batch/_training_set"
#: Kafka offset ranges an operator acknowledged as lost (retention gap, reset topic), one row each.
OFFSET_GAPS = "offset_gaps"
#: A sample of the feature vectors the API served (/features, /score), with the point in time they were served at.
FEATURE_LOG = "serving/feature_log"
#: Online/offline consistency per run, source and feature (batch_layer/consistency.py). Under ``serving/``, not
#: ``batch/``: a view may be named anything, and ``batch/<view>`` (SQL ``batch_<view>``) must never collide with it.
FEATURE_CONSISTENCY = "serving/feature_consistency"
#: One row per completed batch cycle (run id, master version, W, view versions).
RUNS = "batch/_runs"
#: Directories under the storage root that hold no table of ours (Spark staging, Delta's log, earlier demo runs, services).
_NOT_TABLES = frozenset({"_staging", "_delta_log", "previous-runs", "airflow", "mlflow", "services"})


def batch_view(view: str) -> str:
    """The batch layer's table of a view."""
    return f"batch/{view}"


def speed_view(view: str) -> str:
    """The speed layer's partial aggregates of a view."""
    return f"speed/{view}"


def sql_name(name: str) -> str:
    """The table's name in SQL (Trino and the embedded engine).

    ``batch/account_hourly`` → ``batch_account_hourly``, ``batch/_runs`` → ``batch_runs``.
    """
    return "_".join(part.strip("_") for part in name.strip("/").split("/") if part.strip("_"))


def table_uri(profile: ProfileConfig, name: str) -> str:
    """Absolute URI of a table given its name relative to the storage root."""
    return f"{profile.storage.uri.rstrip('/')}/{name.strip('/')}"


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """An Arrow file system for a ``file://`` or ``hdfs://`` location, and the location's path on it.

    pyarrow's own HDFS client needs libhdfs and a JVM in the process; delta-rs reaches HDFS
    natively (hdfs-native), so ``hdfs://`` goes through its object store, rooted at ``uri``
    (the path returned is then ``""``).
    """
    if uri.startswith("hdfs://"):
        return pafs.PyFileSystem(_hdfs_handler(uri.rstrip("/"))), ""
    return pafs.FileSystem.from_uri(uri)


def _hdfs_handler(uri: str) -> pafs.FileSystemHandler:
    from deltalake.fs import DeltaStorageHandler

    class Handler(DeltaStorageHandler):
        """delta-rs's handler with the ``delete_dir_contents`` pyarrow calls (deltalake 1.6.6 declares it, but its
        native handler lacks it): files first, then the emptied directories, deepest first."""

        def delete_dir_contents(self, path: str, missing_dir_ok: bool = False, *, accept_root_dir: bool = False) -> None:
            selector = pafs.FileSelector(path, allow_not_found=missing_dir_ok, recursive=True)
            infos = self.get_file_info_selector(selector)
            for info in infos:
                if info.type == pafs.FileType.File:
                    self.delete_file(info.path)
            for info in sorted(infos, key=lambda i: i.path.count("/"), reverse=True):
                if info.type == pafs.FileType.Directory:
                    self.delete_dir(info.path)

    return Handler(uri)


def join(base: str, relative: str) -> str:
    """``relative`` under ``base`` on a :func:`filesystem` (whose base may be the empty root)."""
    return f"{base.rstrip('/')}/{relative}" if base else relative


def existing_tables(profile: ProfileConfig, max_depth: int = 3) -> list[tuple[str, str]]:
    """(name, uri) of every Delta table under the storage root, sorted by name."""
    root = profile.storage.uri.rstrip("/")
    fs, base = filesystem(root)
    found: list[tuple[str, str]] = []

    def walk(path: str, depth: int) -> None:
        try:
            entries = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except OSError:
            return
        names = {e.base_name for e in entries}
        if "_delta_log" in names:
            name = path[len(base) :].strip("/")
            found.append((name, f"{root}/{name}"))
            return
        if depth < max_depth:
            for e in entries:
                if e.type == pafs.FileType.Directory and not e.base_name.startswith(".") and e.base_name not in _NOT_TABLES:
                    walk(e.path, depth + 1)

    walk(base, 0)
    return sorted(found)


def local_path(uri: str) -> Path:
    """The local directory of a ``file://`` URI (or a plain path).

    Raises:
        ValueError: the URI names another file system (e.g. ``hdfs://``).
    """
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    if "://" in uri:
        raise ValueError(f"{uri} is not on the local disk: this needs a storage root with storage.kind: local")
    return Path(uri)


def local_home(profile: ProfileConfig) -> Path:
    """The local directory for what is not a table (service state and logs, Airflow, MLflow).

    Raises:
        ConfigError: the storage root is not local and the profile names no ``home``.
    """
    if profile.home:
        return Path(profile.home.removeprefix("file://")).expanduser().resolve()
    uri = profile.storage.uri
    if uri.startswith("file://"):
        return local_path(uri)
    raise ConfigError(
        f"the storage root {uri} is not local: set the profile key `home` to a local directory (e.g. home: .lambdaflow-pseudo)"
    )
