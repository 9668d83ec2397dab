"""Supervision of the processes ``lambdaflow services up`` starts: state file, PID identity, readiness, stop.

Every started process is recorded in ``<home>/services/state.json`` with its PID, its
kernel start time, command line, address and log. ``down`` stops a PID only while it
still is the process we started: PIDs get reused, and killing a stranger is worse than
leaving a service running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lambdaflow.config import ProfileConfig
from lambdaflow.contracts.paths import local_home
from lambdaflow.errors import ServiceError

__all__ = [
    "ServiceRecord",
    "free_port",
    "is_running",
    "read_state",
    "record_process",
    "spawn",
    "start_process",
    "state_dir",
    "stop",
    "tail",
    "wait_until",
    "write_state",
]


@dataclass(frozen=True)
class ServiceRecord:
    """A process started by ``lambdaflow services up``."""

    name: str
    pid: int
    address: str
    cmdline: list[str]
    log: str
    started_at: float
    storage: str = ""
    start_ticks: int = 0  # kernel start time of the PID: tells a reused PID apart
    ready_seconds: float = 0.0  # from spawn to the health check passing
    extra: dict[str, str] = field(default_factory=dict)  # service-specific addresses (web UI, controller port)


def state_dir(profile: ProfileConfig) -> Path:
    """``<home>/services``: PIDs, addresses, logs and data of the services started on this machine."""
    return local_home(profile) / "services"


def _state_file(profile: ProfileConfig) -> Path:
    return state_dir(profile) / "state.json"


def read_state(profile: ProfileConfig) -> dict[str, ServiceRecord]:
    path = _state_file(profile)
    if not path.is_file():
        return {}
    return {k: ServiceRecord(**v) for k, v in json.loads(path.read_text()).items()}


def write_state(profile: ProfileConfig, state: dict[str, ServiceRecord]) -> None:
    path = _state_file(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: asdict(v) for k, v in state.items()}, indent=2))
    tmp.replace(path)


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19]) if fields[0] != "Z" else None  # a zombie is not running


def is_running(record: ServiceRecord) -> bool:
    """True when the PID is alive and is still the process we started (PIDs get reused)."""
    ticks = _start_ticks(record.pid)
    if ticks is None:
        return False
    if record.start_ticks:
        return ticks == record.start_ticks
    try:  # records without a start time: compare the command line
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return [c.decode() for c in cmdline if c] == record.cmdline


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def tail(path: Path | str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a session of its own with its output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # A new session: the service outlives the CLI call and is not hit by its Ctrl-C.
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)


def wait_until(
    name: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, timeout: float, what: str = "to become ready"
) -> float:
    """Poll ``ready`` until it is true; returns the seconds waited.

    Raises:
        ServiceError: naming the service and its log, when the process exits or the time runs out (then it is killed).
    """
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise ServiceError(f"{name} exited with {proc.returncode} while starting; see {log}:\n{tail(log)}")
        try:
            if ready():
                return time.monotonic() - start
        except Exception:  # noqa: BLE001 - a health probe of a starting service fails in many ways
            pass
        time.sleep(0.2)
    _signal(proc.pid, signal.SIGKILL)  # not recorded yet: nothing else would ever stop it
    proc.wait()
    raise ServiceError(f"{name} did not come up within {timeout:.0f}s ({what}); see {log}:\n{tail(log)}")


def record_process(
    name: str, proc: subprocess.Popen[bytes], cmd: list[str], log: Path, address: str, ready_seconds: float, **extra: str
) -> ServiceRecord:
    storage = extra.pop("storage", "")
    return ServiceRecord(
        name, proc.pid, address, list(cmd), str(log), time.time(), storage, _start_ticks(proc.pid) or 0, round(ready_seconds, 2), extra
    )


def stop(record: ServiceRecord, timeout: float = 10, sig: int = signal.SIGTERM) -> bool:
    """Stop a recorded process and its session; SIGKILL after ``timeout``. False when it was not running."""
    if not is_running(record):
        return False
    _signal(record.pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_running(record):
        _reap(record.pid)
        time.sleep(0.1)
    if is_running(record):
        _signal(record.pid, signal.SIGKILL)
    _reap(record.pid)
    return True


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the whole session: airflow standalone and spark-class have children
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def start_process(
    profile: ProfileConfig,
    name: str,
    cmd: list[str],
    env: dict[str, str] | None = None,
    address: str = "",
    port: int | None = None,
    wait: float = 60,
) -> ServiceRecord:
    """Start a long-running process of the local stack, log to ``services/<name>.log`` and record it for ``down``.

    Raises:
        ServiceError: it exits while starting, or ``port`` does not open within ``wait`` seconds.
    """
    state = {k: v for k, v in read_state(profile).items() if is_running(v)}
    if name in state:
        return state[name]
    log = state_dir(profile) / f"{name}.log"
    proc = spawn(cmd, log, env)
    if port is not None:
        waited = wait_until(name, lambda: port_open(port), proc, log, wait, f"nothing listens on 127.0.0.1:{port}")
    else:
        time.sleep(1)
        if proc.poll() is not None:
            raise ServiceError(f"{name} exited with {proc.returncode} while starting; see {log}:\n{tail(log)}")
        waited = 1.0
    record = record_process(name, proc, cmd, log, address, waited)
    state[name] = record
    write_state(profile, state)
    return record
