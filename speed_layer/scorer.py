"""Scoring with the champion model, hot-reloaded between micro-batches.

A new champion is loaded and verified (checksum, feature list) before it
replaces the current one; if that fails the current model stays and the reason
is logged. Before any model exists, batches are recorded unscored.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa

from lambdaflow import registry
from lambdaflow.config import Settings

log = logging.getLogger(__name__)


class Scorer:
    """Holds the current champion and scores feature tables with it."""

    def __init__(self, settings: Settings, check_every: float = 5.0) -> None:
        self.settings = settings
        self.check_every = check_every
        self.model: registry.LoadedModel | None = None
        self._last_check = float("-inf")
        self._refused: int | None = None

    @property
    def version(self) -> int | None:
        return self.model.version if self.model else None

    def maybe_reload(self, force: bool = False) -> None:
        """Switch to a new champion if there is one and it verifies."""
        if self.settings.pipeline.model is None:
            return
        now = time.monotonic()
        if not force and now - self._last_check < self.check_every:
            return
        self._last_check = now
        try:
            wanted = registry.champion_version(self.settings)
        except Exception as exc:  # noqa: BLE001 - a registry outage must not stop ingestion
            log.warning("model registry unreachable, keeping model v%s: %s", self.version, exc)
            return
        if wanted is None or wanted == self.version or wanted == self._refused:
            return
        try:
            loaded = registry.load_version(self.settings, wanted)
        except Exception as exc:  # noqa: BLE001 - keep serving with the old model, say why
            self._refused = wanted
            log.error("champion v%s refused, keeping v%s: %s", wanted, self.version, exc)
            return
        log.info("switched to champion v%s (was v%s)", wanted, self.version)
        self.model = loaded

    def score(self, features: pa.Table) -> np.ndarray | None:
        """Scores for every row, or None when no model is loaded."""
        if self.model is None:
            return None
        if features.num_rows == 0:
            return np.zeros(0)
        matrix = np.column_stack([features.column(c).to_numpy(zero_copy_only=False) for c in self.model.features])
        return np.asarray(self.model.booster.inplace_predict(matrix), dtype=np.float64)
