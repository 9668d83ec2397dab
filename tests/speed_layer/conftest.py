"""A per-test pipeline (own topics, own storage root, own consumer group) on the session broker."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lambdaflow.config import Settings, load_settings
from tests.conftest import ROOT


@dataclass
class SpeedEnv:
    settings: Settings
    pipeline_path: Path
    profile_path: Path
    bootstrap: list[str]

    @property
    def cli_args(self) -> list[str]:
        return ["--profile", str(self.profile_path), "--pipeline", str(self.pipeline_path)]


def make_env(tmp_path: Path, bootstrap: list[str], **speed: object) -> SpeedEnv:
    tag = uuid.uuid4().hex[:8]
    pipeline = yaml.safe_load((ROOT / "conf/pipeline.yaml").read_text())
    pipeline["source"]["topic"] = f"tx-{tag}"
    pipeline["labels"]["topic"] = f"cb-{tag}"
    pipeline_path = tmp_path / "pipeline.yaml"
    pipeline_path.write_text(yaml.safe_dump(pipeline))
    profile = yaml.safe_load((ROOT / "conf/profiles/local.yaml").read_text())
    profile["storage"]["root"] = str(tmp_path / "root")
    profile["kafka"] = {"kind": "external", "bootstrap_servers": bootstrap}
    profile["spark"]["conf"]["spark.driver.memory"] = "2g"
    profile["speed"] = {"consumer_group": f"speed-{tag}", "max_batch_records": 5000, "max_batch_seconds": 0.5, "metrics_port": 0, **speed}
    profile_path = tmp_path / "profile.yaml"
    profile_path.write_text(yaml.safe_dump(profile))
    return SpeedEnv(load_settings(str(profile_path), pipeline_path), pipeline_path, profile_path, bootstrap)


@pytest.fixture
def speed_env(tmp_path: Path, broker: list[str]) -> SpeedEnv:
    return make_env(tmp_path, broker)
