"""Loading configuration: reading the YAML files, expanding ``${VAR}`` and explaining what is wrong.

:func:`load_settings` finds the configuration directory, loads
``pipeline.yaml`` and the chosen profile, and returns them as one
:class:`Settings`. A bad file fails with a :class:`~lambdaflow.errors.ConfigError`
naming the file and, for each problem, the key path, what was expected and what
was found (with a "did you mean" for a misspelt key).

Profiles may reference environment variables as ``${VAR}`` or
``${VAR:-default}``; the pipeline file may not (it must mean the same thing
everywhere).
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from lambdaflow.config.common import DEFAULT_PROFILE, ENV_CONF_DIR, ENV_PIPELINE, ENV_PROFILE, is_secret
from lambdaflow.config.pipeline import PipelineConfig
from lambdaflow.config.profile import ProfileConfig, SpeedConfig
from lambdaflow.errors import ConfigError

__all__ = [
    "Settings",
    "default_conf_dir",
    "for_instance",
    "load_pipeline",
    "load_profile",
    "load_settings",
    "resolve_profile_path",
]


class Settings(BaseModel):
    """A pipeline with the profile it runs on, and where each came from."""

    model_config = ConfigDict(frozen=True)

    pipeline: PipelineConfig
    profile: ProfileConfig
    profile_name: str
    pipeline_path: Path
    profile_path: Path


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, path: Path) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a parsed profile.

    Args:
        value: the parsed YAML (mappings and lists are walked, other scalars kept).
        path: the file it came from, for the error message.

    Returns:
        The same structure with every reference expanded.

    Raises:
        ConfigError: a variable is unset and has no default.
    """
    if isinstance(value, dict):
        return {k: _interpolate(v, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, path) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set (write ${{{name}:-default}} for a default)")

    return _ENV_RE.sub(substitute, value)


def _read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML file whose top level must be a mapping.

    Raises:
        ConfigError: the file is missing, not YAML, or not a mapping at the top level.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, found {type(data).__name__}")
    return data


def _format_loc(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a key path people read: ``views[0].aggregates.n``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Walk a model along a location to list the keys allowed where an unknown key was found."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(part) or next((f for f in current.model_fields.values() if f.alias == part), None)
            current = _model_of(info.annotation) if info else None
        elif isinstance(current, tuple):  # a union of models: pick the one that knows the key
            current = next((m for m in current if part in m.model_fields), None)
            current = _model_of(current.model_fields[part].annotation) if current else None
    models = current if isinstance(current, tuple) else (current,)
    keys: set[str] = set()
    for m in models:
        if isinstance(m, type) and issubclass(m, BaseModel):
            keys |= {f.alias or name for name, f in m.model_fields.items()}
    return sorted(keys)


def _model_of(annotation: Any) -> Any:
    """The model(s) a field holds, looking through Optional, list, dict and unions.

    Returns:
        One model class, a tuple of them for a union, or None when the field holds no model.
    """
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = [m for arg in get_args(annotation) if (m := _model_of(arg)) is not None]
    flat: list[Any] = []
    for m in found:
        flat.extend(m if isinstance(m, tuple) else (m,))
    if not flat:
        return None
    if get_origin(annotation) is dict and len(flat) == 1:
        return flat[0]
    return flat[0] if len(flat) == 1 else tuple(flat)


#: Fields holding a discriminated union: pydantic puts the chosen tag into error locations.
_UNION_FIELDS = {"storage", "kafka", "features"}


def _strip_union_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the discriminator tag pydantic inserts after a union field (``storage.local.root`` → ``storage.root``)."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        after_union = i >= 1 and loc[i - 1] in _UNION_FIELDS and loc[i - 1] != "features"
        after_feature = i >= 2 and loc[i - 2] == "features" and isinstance(loc[i - 1], int)
        if isinstance(part, str) and (after_union or after_feature):
            continue
        out.append(part)
    return tuple(out)


def _explain(error: ErrorDetails, model: type[BaseModel]) -> str:
    """One line for one pydantic error: the key path, then what is wrong and what was found (or how to fix the key)."""
    loc = _strip_union_tags(tuple(error["loc"]))
    key = _format_loc(loc)
    found = error.get("input")
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        fix = f"did you mean {hint[0]!r}?" if hint else f"allowed keys here: {', '.join(allowed)}"
        return f"{key}: unknown key; {fix}"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    shown = repr(found)
    if loc and is_secret(loc[-1]):
        return f"{key}: {message}; found a value that is not shown (a secret)"
    if isinstance(found, dict | list) or len(shown) > 120:  # a whole section (a model-level check): the reason says it all
        return f"{key}: {message}"
    return f"{key}: {message}; found {shown}"


def _validate(model: type[BaseModel], data: dict[str, Any], path: Path) -> Any:
    """Validate parsed data against a model, explaining every problem at once.

    Raises:
        ConfigError: the data is invalid; the message names the file and lists each problem on its own line.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [_explain(e, model) for e in exc.errors(include_url=False)]
        raise ConfigError(f"{path}: invalid configuration\n  " + "\n  ".join(lines)) from None


def default_conf_dir() -> Path:
    """``$LAMBDAFLOW_CONF``, else ``./conf``, else the ``conf/`` next to this checkout."""
    if os.environ.get(ENV_CONF_DIR):
        return Path(os.environ[ENV_CONF_DIR])
    if Path("conf/pipeline.yaml").is_file():
        return Path("conf")
    # this file is <checkout>/lambdaflow/config/loading.py: parents[2] is the checkout
    return Path(__file__).resolve().parents[2] / "conf"


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Parse and validate a pipeline file.

    Args:
        path: the pipeline YAML file.

    Returns:
        The validated pipeline.

    Raises:
        ConfigError: the file is missing, not YAML or not a valid pipeline.
    """
    path = Path(path)
    return _validate(PipelineConfig, _read_yaml(path), path)


def load_profile(path: str | Path) -> ProfileConfig:
    """Parse a profile file, expand ``${VAR}`` references and validate it.

    Args:
        path: the profile YAML file.

    Returns:
        The validated profile.

    Raises:
        ConfigError: the file is missing, not YAML, refers to an unset variable or is not a valid profile.
    """
    path = Path(path)
    return _validate(ProfileConfig, _interpolate(_read_yaml(path), path), path)


def resolve_profile_path(profile: str | None, conf_dir: Path) -> tuple[str, Path]:
    """Find a profile by name (``conf/profiles/<name>.yaml``) or by file path.

    Args:
        profile: a profile name or a ``.yaml``/``.yml`` path; defaults to ``$LAMBDAFLOW_PROFILE`` then ``local``.
        conf_dir: the configuration directory holding ``profiles/``.

    Returns:
        The profile's name and its file.

    Raises:
        ConfigError: no such profile.
    """
    chosen = profile or os.environ.get(ENV_PROFILE) or DEFAULT_PROFILE
    if chosen.endswith((".yaml", ".yml")):
        return Path(chosen).stem, Path(chosen)
    path = conf_dir / "profiles" / f"{chosen}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (conf_dir / "profiles").glob("*.yaml"))
        raise ConfigError(f"{path}: no profile named {chosen!r}; known profiles: {', '.join(known) or 'none'}")
    return chosen, path


def load_settings(profile: str | None = None, pipeline: str | Path | None = None, conf_dir: str | Path | None = None) -> Settings:
    """Load the pipeline and the chosen profile.

    Args:
        profile: a profile name or a YAML path; defaults to ``$LAMBDAFLOW_PROFILE`` then ``local``.
        pipeline: a pipeline YAML path; defaults to ``$LAMBDAFLOW_PIPELINE`` then ``<conf>/pipeline.yaml``.
        conf_dir: the configuration directory; defaults to :func:`default_conf_dir`.

    Returns:
        The pipeline, the profile, and where each came from.

    Raises:
        ConfigError: any file is missing or invalid.
    """
    conf = Path(conf_dir) if conf_dir else default_conf_dir()
    pipeline_path = Path(pipeline or os.environ.get(ENV_PIPELINE) or conf / "pipeline.yaml")
    name, profile_path = resolve_profile_path(profile, conf)
    return Settings(
        pipeline=load_pipeline(pipeline_path),
        profile=load_profile(profile_path),
        profile_name=name,
        pipeline_path=pipeline_path,
        profile_path=profile_path,
    )


def for_instance(settings: Settings, instance: int | None) -> Settings:
    """``settings`` for speed-layer instance ``instance`` (`--instance K`); unchanged when None.

    Raises:
        ConfigError: ``instance`` is outside ``speed.instances``; the message names both keys.
    """
    if instance is None:
        return settings
    speed = _validate(SpeedConfig, {**settings.profile.speed.model_dump(), "instance": instance}, settings.profile_path)
    return settings.model_copy(update={"profile": settings.profile.model_copy(update={"speed": speed})})
