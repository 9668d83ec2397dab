"""The pipeline models: the whole of ``conf/pipeline.yaml`` (what the system computes).

The pipeline file describes the dataset and the logic: the event schema
(:class:`EventsSpec`), the late labels (:class:`LabelsSpec`), the views
(:class:`ViewSpec`), the features (:data:`FeatureSpec`) and the model
(:class:`ModelSpec`). :class:`PipelineConfig` checks that every reference
between them resolves. The pipeline file may not use ``${VAR}`` references:
it must mean the same thing everywhere.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from lambdaflow.columns import RESERVED_COLUMNS
from lambdaflow.config.common import StrictModel, _duration

__all__ = [
    "AGGREGATES_WITH_COLUMN",
    "NUMERIC_AGGREGATES",
    "NUMERIC_TYPES",
    "AggregateFn",
    "AggregateSpec",
    "EventFeature",
    "EventsSpec",
    "FeatureSpec",
    "FieldSpec",
    "FieldType",
    "FilterSpec",
    "LabelsSpec",
    "ModelSpec",
    "PipelineConfig",
    "RatioFeature",
    "SourceSpec",
    "ViewFeature",
    "ViewSpec",
]

#: Types an event field may have (each maps to one Arrow and one Spark type, see :mod:`lambdaflow.schemas`).
FieldType = Literal["string", "int", "long", "double", "boolean", "timestamp", "date"]
#: Field types that min/max checks and numeric aggregates accept.
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
        """Reject checks that do not fit the field's type.

        Raises:
            ValueError: min/max on a non-numeric field, allowed/max_length on a non-string field, or min > max.
        """
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
    max_future: Annotated[int, Field(gt=0)] = Field(
        default=3600,
        description="Accepted event-time window, upper side: an event whose time column lies more than this after "
        "its ingest time is quarantined (e.g. '1h'; default 1h, for clock skew).",
    )
    max_age: Annotated[int, Field(gt=0)] = Field(
        default=400 * 86400,
        description="Accepted event-time window, lower side: an event whose time column lies more than this before "
        "its ingest time is quarantined (e.g. '400d'; default 400d, so a year of history can be replayed).",
    )

    null_keys: Literal["quarantine", "key"] = Field(
        default="quarantine",
        description="What an event whose partition key is null becomes, the same in every layer: 'quarantine' rejects it "
        "with its reason; 'key' makes null one more key (such events have no partition order: Kafka spreads them).",
    )

    _max_future = field_validator("max_future", mode="before")(_duration)
    _max_age = field_validator("max_age", mode="before")(_duration)

    @model_validator(mode="after")
    def _roles_exist(self) -> EventsSpec:
        """Check that the id, time and key columns are event fields and the date partition is not.

        Raises:
            ValueError: a role names no field, the time column is not a timestamp, or the date partition collides.
        """
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
        """Check that the event id, label and time columns are label fields.

        Raises:
            ValueError: a role names no label field.
        """
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
        """Require a column for every aggregate but ``count``, and none for ``count``.

        Raises:
            ValueError: the column is missing or superfluous.
        """
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

    @model_validator(mode="after")
    def _list_for_membership(self) -> FilterSpec:
        """``in`` / ``not in`` take a list and the comparisons a single value.

        A single string under ``in`` would be a list of characters to Spark and a list of one
        string to Arrow: the batch and speed layers would disagree.

        Raises:
            ValueError: the value's shape does not fit the operator.
        """
        if self.op in ("in", "not in") and not isinstance(self.value, list):
            raise ValueError(f"op {self.op!r} takes a list of values; write value: [{self.value!r}]")
        if self.op not in ("in", "not in") and isinstance(self.value, list):
            raise ValueError(f"op {self.op!r} compares with one value, found a list; use op: in")
        return self


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


FeatureSpec = Annotated[EventFeature | ViewFeature | RatioFeature, Field(discriminator="kind")]


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
        """Check every reference between events, views, features and the model.

        Raises:
            ValueError: a duplicate name, a reference that does not resolve, or a model without features or labels.
        """
        fields = self.events.fields
        _check_event_roles(self.events)
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
        """The declared views by name."""
        return {v.name: v for v in self.views}


def _check_event_roles(events: EventsSpec) -> None:
    """Event fields that would break the tables: system column names, a nullable event id.

    Raises:
        ValueError: naming the field and the fix.
    """
    clashing = sorted(name for name in events.fields if name in RESERVED_COLUMNS or name.startswith("__"))
    if clashing:
        raise ValueError(
            f"event field(s) {clashing} use names reserved for system columns ({sorted(RESERVED_COLUMNS)}, and '__' prefixes); rename them"
        )
    if events.fields[events.id_column].nullable:
        raise ValueError(
            f"id_column {events.id_column!r} is declared nullable: duplicates are removed by it, so every event needs one; set nullable: false"
        )


def _check_view(view: ViewSpec, fields: dict[str, FieldSpec]) -> None:
    """Check that a view's keys, filters and aggregates read event fields of a fitting type.

    Raises:
        ValueError: a column is not an event field, or a numeric aggregate reads a non-numeric column.
    """
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
                f"view {view.name!r}: aggregate {name!r} ({agg.fn}) needs a numeric column, {agg.column!r} is {fields[agg.column].type}"
            )


def _check_feature(
    feature: EventFeature | ViewFeature | RatioFeature, events: EventsSpec, views: dict[str, ViewSpec], earlier: set[str]
) -> None:
    """Check that a feature's column, view, aggregate, window or operands exist and fit.

    Args:
        feature: the feature to check.
        events: the event section of the pipeline.
        views: the declared views by name.
        earlier: names of the features declared before this one (a ratio may only use those).

    Raises:
        ValueError: a reference does not resolve or does not fit, with the reason.
    """
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
                f"feature {feature.name!r}: view {feature.view!r} has no aggregate {feature.aggregate!r}; it has {sorted(view.aggregates)}"
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
