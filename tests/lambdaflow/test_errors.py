"""Errors: one base, and the command line turns any expected failure into one readable line and an exit code."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from lambdaflow import errors
from tests.conftest import run_cli


def test_every_error_derives_from_the_one_base() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, Exception)]
    assert len(classes) >= 10
    assert all(issubclass(c, errors.LambdaflowError) for c in classes)
    assert set(errors.__all__) == {c.__name__ for c in classes}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("produce", "--file", "{tmp}/events.txt"), "cannot replay a .txt file"),
        (("produce", "--file", "{tmp}/missing.csv"), "no such file"),
        (("produce", "--file", "{tmp}/broken.jsonl"), "cannot be read as jsonl"),
        (("tables", "history", "master/nothing-here"), "master/nothing-here"),
        (("batch", "publish", "--master-version", "3"), "was not recomputed from master v3"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    """Regression: ValueError from a replayed file and CycleError reached users as tracebacks."""
    profile = tmp_path / "profile.yaml"
    profile.write_text(
        f"storage: {{kind: local, root: {tmp_path / 'root'}}}\nkafka: {{kind: external, bootstrap_servers: ['127.0.0.1:9']}}\n"
    )
    (tmp_path / "events.txt").write_text("x")
    (tmp_path / "broken.jsonl").write_text('{"event_id": "a"\n')
    result = run_cli(*[a.format(tmp=tmp_path) for a in args], profile=profile, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
