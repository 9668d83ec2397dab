"""Models in MLflow: register every trained model, promote the champion, load and verify it.

Tracking defaults to a SQLite store under the storage root (artefacts next to
it); the cluster profile names a tracking server. A registered version carries
tags for its feature list, training-data watermark and the SHA-256 of its
booster file; :func:`load_champion` refuses an artefact whose checksum or
feature list does not match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambdaflow.config import Settings
from lambdaflow.contracts.paths import local_home
from lambdaflow.errors import ConfigError, ModelVerificationError

#: Alias of the model the speed layer scores with.
CHAMPION = "champion"
BOOSTER_FILE = "booster.ubj"
FEATURES_FILE = "features.json"
log = logging.getLogger(__name__)


def tracking_uri(settings: Settings) -> str:
    """The MLflow tracking URI: the profile's, or SQLite under the profile's local home.

    Raises:
        ConfigError: neither ``mlflow.tracking_uri`` nor a local home (``home``, or a local storage root).
    """
    if settings.profile.mlflow.tracking_uri:
        return settings.profile.mlflow.tracking_uri
    try:
        path = local_home(settings.profile) / "mlflow"
    except ConfigError as exc:
        raise ConfigError(f"{exc}, or set mlflow.tracking_uri to an MLflow server") from None
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}/mlflow.db"


def client(settings: Settings) -> Any:
    """An MLflow client bound to the pipeline's tracking store."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(settings), registry_uri=tracking_uri(settings))


def experiment_id(settings: Settings) -> str:
    c = client(settings)
    name = f"lambdaflow/{settings.pipeline.name}"
    found = c.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    artifacts = None
    if not settings.profile.mlflow.tracking_uri:
        artifacts = (local_home(settings.profile) / "mlflow" / "artifacts").as_uri()
    return str(c.create_experiment(name, artifact_location=artifacts))


def model_name(settings: Settings) -> str:
    assert settings.pipeline.model is not None
    return settings.pipeline.model.name


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class LoadedModel:
    """A verified model ready to score."""

    version: int
    booster: Any  # xgboost.Booster
    features: list[str]
    checksum: str
    watermark: int


def champion_version(settings: Settings) -> int | None:
    """The registered version holding the champion alias, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return int(client(settings).get_model_version_by_alias(model_name(settings), CHAMPION).version)
    except MlflowException:
        return None


def load_version(settings: Settings, version: int) -> LoadedModel:
    """Download a registered version, verify checksum and feature list, load the booster.

    Raises:
        ModelVerificationError: the artefact is missing, altered, or built for other features.
    """
    import xgboost as xgb

    c = client(settings)
    mv = c.get_model_version(model_name(settings), str(version))
    expected_sha = mv.tags.get("sha256")
    features = json.loads(mv.tags.get("features", "[]"))
    wanted = [f.name for f in settings.pipeline.features]
    if features != wanted:
        raise ModelVerificationError(f"model v{version} was trained on features {features}, the pipeline declares {wanted}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            from mlflow.artifacts import download_artifacts

            local = download_artifacts(artifact_uri=f"{mv.source}/{BOOSTER_FILE}", dst_path=tmp, tracking_uri=tracking_uri(settings))
        except Exception as exc:
            raise ModelVerificationError(f"model v{version}: cannot download its booster: {exc}") from exc
        actual = sha256(local)
        if actual != expected_sha:
            raise ModelVerificationError(f"model v{version}: checksum {actual[:12]}… differs from the registered {str(expected_sha)[:12]}…")
        booster = xgb.Booster()
        try:
            booster.load_model(local)
        except xgb.core.XGBoostError as exc:
            raise ModelVerificationError(f"model v{version}: booster does not load: {exc}") from exc
    return LoadedModel(int(version), booster, features, actual, int(mv.tags.get("watermark", "-1")))


def load_champion(settings: Settings) -> LoadedModel | None:
    """The verified champion, or None when no model was promoted yet.

    Raises:
        ModelVerificationError: the champion's artefact fails verification.
    """
    version = champion_version(settings)
    return None if version is None else load_version(settings, version)


def register(
    settings: Settings,
    run_id: str,
    booster_path: Path,
    features: list[str],
    watermark: int,
    metrics: dict[str, float],
    extra_tags: dict[str, str] | None = None,
) -> int:
    """Log the booster to the run and register it as a new model version.

    Returns:
        The new version number.
    """
    c = client(settings)
    checksum = sha256(booster_path)
    c.log_artifact(run_id, str(booster_path), "model")
    feature_file = booster_path.parent / FEATURES_FILE
    feature_file.write_text(json.dumps(features))
    c.log_artifact(run_id, str(feature_file), "model")
    name = model_name(settings)
    if not c.search_registered_models(filter_string=f"name = '{name}'"):
        c.create_registered_model(name)
    source = f"{c.get_run(run_id).info.artifact_uri}/model"
    tags = {"sha256": checksum, "features": json.dumps(features), "watermark": str(watermark)}
    tags.update({f"metric.{k}": f"{v:.6f}" for k, v in metrics.items()})
    tags.update(extra_tags or {})
    mv = c.create_model_version(name, source, run_id, tags=tags)
    c.log_param(run_id, "model_sha256", checksum)
    return int(mv.version)


def promote(settings: Settings, version: int) -> None:
    """Point the champion alias at ``version``."""
    client(settings).set_registered_model_alias(model_name(settings), CHAMPION, str(version))


def params_fingerprint(model: Any) -> str:
    """A short hash of the model section (parameters, rounds, split, promotion rule)."""
    return hashlib.sha256(model.model_dump_json().encode()).hexdigest()[:12]


def find_version(settings: Settings, tag: str, value: str) -> Any | None:
    """The newest registered version carrying ``tag == value``, or None."""
    c = client(settings)
    name = model_name(settings)
    if not c.search_registered_models(filter_string=f"name = '{name}'"):
        return None
    found = [mv for mv in c.search_model_versions(f"name = '{name}'") if mv.tags.get(tag) == value]
    return max(found, key=lambda mv: int(mv.version)) if found else None
