"""Both notebooks run top to bottom (nbclient) on data made by the real pipeline, and draw their plots."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from batch_layer.train import train
from batch_layer.training import build_training_set
from batch_layer.views import recompute_views
from lambdaflow.sample_data import generate
from tests.conftest import ROOT, make_env
from tests.speed_layer.test_speed_layer import drain, send


@pytest.fixture(scope="module")
def demo_data(kafka, spark, tmp_path_factory):
    """A small version of what `make demo` leaves behind: views, labels, a champion, scored predictions."""
    env = make_env(tmp_path_factory.mktemp("notebooks"), kafka)
    history = generate(20_000, days=30, seed=51)
    send(env, history.events, history.labels)
    drain(env, idle=3)
    recompute_views(env.settings, spark)
    build_training_set(env.settings, spark)
    assert train(env.settings, spark).promoted
    send(env, generate(2000, days=1, seed=52, start=history.events["event_time"][-1].as_py()).events)
    drain(env, idle=3)
    return env


@pytest.mark.parametrize("name", ["explore", "train_experiment"])
def test_notebook_runs_and_plots(demo_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    plots = tmp_path / "plots"
    for key, value in {
        "LAMBDAFLOW_PROFILE": str(demo_data.profile_path),
        "LAMBDAFLOW_PIPELINE": str(demo_data.pipeline_path),
        "LAMBDAFLOW_CONF": str(ROOT / "conf"),
        "LAMBDAFLOW_NOTEBOOK_PLOTS": str(plots),
        "PYTHONPATH": str(ROOT),
    }.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), "saved with outputs"
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    expected = {
        "explore": {"volumes.png", "scores.png", "model_metrics.png", "freshness.png"},
        "train_experiment": {"experiment_vs_champion.png"},
    }[name]
    assert expected <= {p.name for p in plots.glob("*.png")}
    assert all(p.stat().st_size > 5000 for p in plots.glob("*.png"))
