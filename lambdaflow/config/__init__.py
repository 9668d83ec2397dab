"""Typed configuration: ``conf/pipeline.yaml`` (what) and ``conf/profiles/<name>.yaml`` (where).

The pipeline file describes the dataset and the logic: the event schema, the
views, the features and the model. A profile describes where things run:
storage root, Kafka, Spark, the SQL engine, Trino and MLflow. Every model
rejects unknown keys, and a bad file fails with a :class:`ConfigError` naming the
file, the key path, what was expected and what was found.

Profiles may reference environment variables as ``${VAR}`` or
``${VAR:-default}``; the pipeline file may not (it must mean the same thing
everywhere).

The package is split by concern, and every public name is re-exported here so
callers import from ``lambdaflow.config`` only:

* :mod:`lambdaflow.config.common` — the strict base model, durations, environment variables;
* :mod:`lambdaflow.config.pipeline` — the pipeline models;
* :mod:`lambdaflow.config.profile` — the profile models;
* :mod:`lambdaflow.config.loading` — reading, ``${VAR}`` expansion, error messages, :func:`load_settings`.
"""

from __future__ import annotations

from lambdaflow.config.common import (
    DEFAULT_PROFILE,
    ENV_CONF_DIR,
    ENV_PIPELINE,
    ENV_PROFILE,
    StrictModel,
    parse_duration,
)
from lambdaflow.config.loading import (
    Settings,
    default_conf_dir,
    for_instance,
    load_pipeline,
    load_profile,
    load_settings,
    resolve_profile_path,
)
from lambdaflow.config.pipeline import (
    AGGREGATES_WITH_COLUMN,
    NUMERIC_AGGREGATES,
    NUMERIC_TYPES,
    AggregateFn,
    AggregateSpec,
    EventFeature,
    EventsSpec,
    FeatureSpec,
    FieldSpec,
    FieldType,
    FilterSpec,
    LabelsSpec,
    ModelSpec,
    PipelineConfig,
    RatioFeature,
    SourceSpec,
    ViewFeature,
    ViewSpec,
)
from lambdaflow.config.profile import (
    AirflowConfig,
    EmbeddedKafka,
    ExternalKafka,
    HdfsStorage,
    HealthConfig,
    KafkaConfig,
    LocalStorage,
    MlflowConfig,
    ProfileConfig,
    ServingConfig,
    SparkConfig,
    SpeedConfig,
    StorageConfig,
    TrinoConfig,
)

# ConfigError lives with the other expected failures; re-exported so `from lambdaflow.config import ConfigError` keeps working.
from lambdaflow.errors import ConfigError

__all__ = [
    "AGGREGATES_WITH_COLUMN",
    "DEFAULT_PROFILE",
    "ENV_CONF_DIR",
    "ENV_PIPELINE",
    "ENV_PROFILE",
    "NUMERIC_AGGREGATES",
    "NUMERIC_TYPES",
    "AggregateFn",
    "AggregateSpec",
    "AirflowConfig",
    "ConfigError",
    "EmbeddedKafka",
    "EventFeature",
    "EventsSpec",
    "ExternalKafka",
    "FeatureSpec",
    "FieldSpec",
    "FieldType",
    "FilterSpec",
    "HdfsStorage",
    "HealthConfig",
    "KafkaConfig",
    "LabelsSpec",
    "LocalStorage",
    "MlflowConfig",
    "ModelSpec",
    "PipelineConfig",
    "ProfileConfig",
    "RatioFeature",
    "ServingConfig",
    "Settings",
    "SourceSpec",
    "SparkConfig",
    "SpeedConfig",
    "StorageConfig",
    "StrictModel",
    "TrinoConfig",
    "ViewFeature",
    "ViewSpec",
    "default_conf_dir",
    "for_instance",
    "load_pipeline",
    "load_profile",
    "load_settings",
    "parse_duration",
    "resolve_profile_path",
]
