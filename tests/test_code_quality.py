"""Lint, format and types, checked with every test run (so `make test` and CI fail on a regression).

The rules live in ``ruff.toml`` and ``mypy.ini``; the tools are pinned dev dependencies.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_ruff_lint() -> None:
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run(str(BIN / "ruff"), "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy() -> None:
    result = run(str(BIN / "mypy"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_grows_past_400_lines_without_a_reason() -> None:
    """Modules are kept small; a longer one says why in its docstring (a line starting 'Long because')."""
    too_long = []
    for package in ("lambdaflow", "lambdaflow_app", "batch_layer", "speed_layer", "serving_layer", "dags"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            if text.count("\n") > 400 and "Long because" not in text[:3000]:
                too_long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
    assert not too_long, too_long
