"""The command line as users run it: tables listing and history."""

from __future__ import annotations

from pathlib import Path

import yaml

from lambdaflow.config import LocalStorage
from lambdaflow.contracts.master import events_table, to_master_rows
from lambdaflow.sample_data import generate
from tests.conftest import run_cli


def test_tables_list_and_history(settings, tmp_path: Path) -> None:
    profile = settings.profile.model_copy(update={"storage": LocalStorage(kind="local", root=str(tmp_path / "root"))})
    local = settings.model_copy(update={"profile": profile})
    events = generate(300, days=1, seed=2).events
    events_table(local).append(to_master_rows(events, local.pipeline.events, 1), metadata={"note": "first batch"})
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile.model_dump(by_alias=True, mode="json")))
    listing = run_cli("tables", "list", profile=path).stdout
    assert "master/events" in listing and "300" in listing
    history = run_cli("tables", "history", "master/events", "--limit", "1", profile=path).stdout
    assert '"note": "first batch"' in history
