"""What every configuration model shares: the strict base model, durations and the environment variables.

The pipeline models (:mod:`lambdaflow.config.pipeline`), the profile models
(:mod:`lambdaflow.config.profile`) and the loader (:mod:`lambdaflow.config.loading`)
all build on this module, and it imports none of them.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "DEFAULT_PROFILE",
    "ENV_CONF_DIR",
    "ENV_PIPELINE",
    "ENV_PROFILE",
    "StrictModel",
    "parse_duration",
]

#: Environment variables that select the configuration.
ENV_PROFILE = "LAMBDAFLOW_PROFILE"
ENV_CONF_DIR = "LAMBDAFLOW_CONF"
ENV_PIPELINE = "LAMBDAFLOW_PIPELINE"
DEFAULT_PROFILE = "local"

_DURATION_RE = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | int) -> int:
    """Parse ``"15s"``, ``"30m"``, ``"1h"``, ``"7d"`` or ``"2w"`` into seconds.

    A plain integer is taken as seconds already.

    Args:
        text: a duration such as ``"30m"``, or a number of seconds.

    Returns:
        The duration in seconds.

    Raises:
        ValueError: the text is not a positive duration of that form.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        seconds = text
    else:
        match = _DURATION_RE.match(str(text))
        if not match:
            raise ValueError(f"expected a duration such as '30s', '15m', '1h' or '7d', found {text!r}")
        seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, found {text!r}")
    return seconds


def _duration(value: Any) -> int:
    """:func:`parse_duration` as a ``mode="before"`` field validator (it receives the raw YAML value).

    Raises:
        ValueError: the value is not a positive duration.
    """
    return parse_duration(value)


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


#: A configuration key naming one of these holds a secret: never printed, in errors or in ``config show``.
SECRET_WORDS: tuple[str, ...] = ("token", "password", "secret")


def is_secret(key: object) -> bool:
    """True for a key whose value must never be shown (``serving.token``, ``kafka.sasl_password``, …)."""
    return any(word in str(key).lower() for word in SECRET_WORDS)
