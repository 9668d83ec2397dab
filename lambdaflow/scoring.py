"""Scoring with the champion: the feature matrix, the prediction call and the hot-reloading model cache.

The speed layer, the REST API and model evaluation in the batch layer all score
through these functions, so a model sees its features in the same column order
and the same dtype everywhere. See docs/architecture.md §6 (features and models).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from lambdaflow import registry
from lambdaflow.config import Settings

__all__ = ["ChampionCache", "feature_matrix", "predict"]

log = logging.getLogger(__name__)


def feature_matrix(features: pa.Table, columns: Sequence[str] | None = None) -> np.ndarray:
    """A float64 matrix of ``features`` (rows × ``columns``, default: every column in table order)."""
    names = list(columns) if columns is not None else features.column_names
    if features.num_rows == 0:
        return np.zeros((0, len(names)))
    return np.column_stack([features.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in names])


def predict(booster: Any, x: np.ndarray) -> np.ndarray:
    """Scores of an XGBoost booster for the rows of ``x``."""
    if x.shape[0] == 0:
        return np.zeros(0)
    return np.asarray(booster.inplace_predict(x), dtype=np.float64)


class ChampionCache:
    """The verified champion, reloaded when the registry's alias moves.

    A new champion replaces the current one only once it has loaded and passed
    verification (checksum, feature list). If the registry cannot be reached, or
    the new artefact fails, the current model stays and the reason is logged; a
    version that failed is not retried until the alias moves again.

    Args:
        settings: pipeline and profile (where the registry is).
        check_every: seconds between looks at the registry (``refresh(force=True)`` looks now).
    """

    def __init__(self, settings: Settings, check_every: float = 5.0) -> None:
        self.settings = settings
        self.check_every = check_every
        self.model: registry.LoadedModel | None = None
        self._last_check = float("-inf")
        self._refused: int | None = None

    @property
    def version(self) -> int | None:
        """The version in use, or None before any champion was loaded."""
        return self.model.version if self.model else None

    def refresh(self, force: bool = False) -> registry.LoadedModel | None:
        """Switch to a new champion if there is one and it verifies; returns the model in use."""
        if self.settings.pipeline.model is None:
            return None
        now = time.monotonic()
        if not force and now - self._last_check < self.check_every:
            return self.model
        self._last_check = now
        try:
            wanted = registry.champion_version(self.settings)
        except Exception as exc:  # noqa: BLE001 - a registry outage must not stop ingestion or serving
            log.warning("model registry unreachable, keeping model v%s: %s", self.version, exc)
            return self.model
        if wanted is None or wanted == self.version or wanted == self._refused:
            return self.model
        try:
            loaded = registry.load_version(self.settings, wanted)
        except Exception as exc:  # noqa: BLE001 - keep scoring with the old model, say why
            self._refused = wanted
            log.error("champion v%s refused, keeping v%s: %s", wanted, self.version, exc)
            return self.model
        log.info("switched to champion v%s (was v%s)", wanted, self.version)
        self.model = loaded
        return loaded

    def score(self, features: pa.Table) -> np.ndarray | None:
        """Scores for every row of ``features``, or None when no model is loaded."""
        if self.model is None:
            return None
        return predict(self.model.booster, feature_matrix(features, self.model.features))
