"""Config: the shipped files load; bad files fail naming the file, the key, what was expected and found."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from lambdaflow.config import (
    ConfigError,
    HdfsStorage,
    LocalStorage,
    load_pipeline,
    load_profile,
    load_settings,
    parse_duration,
)
from tests.conftest import ROOT, run_cli

CONF = ROOT / "conf"


def _write(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _pipeline() -> dict:
    return yaml.safe_load((CONF / "pipeline.yaml").read_text())


def test_shipped_pipeline_and_profiles_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAMBDAFLOW_PROFILE", raising=False)
    local = load_settings(conf_dir=CONF)
    assert local.profile_name == "local"
    assert isinstance(local.profile.storage, LocalStorage)
    assert {v.name for v in local.pipeline.views} >= {"account_hourly", "account_profile"}
    cluster = load_settings(profile="cluster", conf_dir=CONF)
    assert isinstance(cluster.profile.storage, HdfsStorage)
    assert cluster.profile.storage.uri.startswith("hdfs://")
    assert cluster.profile.sql_engine == "trino"


def test_profile_chosen_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDAFLOW_PROFILE", "cluster")
    assert load_settings(conf_dir=CONF).profile_name == "cluster"
    monkeypatch.setenv("LAMBDAFLOW_PROFILE", "nope")
    with pytest.raises(ConfigError, match=r"no profile named 'nope'; known profiles: cluster, local"):
        load_settings(conf_dir=CONF)


def test_profile_expands_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAMBDAFLOW_HOME", str(tmp_path / "home"))
    profile = load_profile(CONF / "profiles/local.yaml")
    assert profile.storage.uri == (tmp_path / "home").as_uri()
    monkeypatch.setenv("LAMBDAFLOW_HDFS_ROOT", "hdfs://nn.example:8020/lf")
    assert load_profile(CONF / "profiles/cluster.yaml").storage.uri == "hdfs://nn.example:8020/lf"


def test_unset_variable_names_it(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.yaml", {"storage": {"kind": "local", "root": "${SURELY_UNSET_VAR_42}"}, "kafka": {"kind": "embedded"}})
    with pytest.raises(ConfigError, match=r"p\.yaml: environment variable SURELY_UNSET_VAR_42 is not set"):
        load_profile(path)


def test_typo_key_names_file_key_and_fix(tmp_path: Path) -> None:
    data = _pipeline()
    data["views"][0]["buckett"] = data["views"][0].pop("bucket")
    path = _write(tmp_path, "pipeline.yaml", data)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert str(path) in message
    assert "views[0].buckett: unknown key; did you mean 'bucket'?" in message


def test_wrong_type_names_key_expected_and_found(tmp_path: Path) -> None:
    data = _pipeline()
    data["source"]["partitions"] = "four"
    data["views"][1]["aggregates"]["txn_count"]["fn"] = "cnt"
    path = _write(tmp_path, "pipeline.yaml", data)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert "source.partitions: Input should be a valid integer" in message and "found 'four'" in message
    assert "views[1].aggregates.txn_count.fn: Input should be 'count'" in message and "found 'cnt'" in message


def test_profile_typo_inside_a_backend_union(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.yaml", {"storage": {"kind": "local", "rooot": "x"}, "kafka": {"kind": "embedded", "storage": "disk"}})
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    message = str(info.value)
    assert "storage.rooot: unknown key; did you mean 'root'?" in message
    assert "storage.root: required key is missing" in message
    assert "kafka.storage: Input should be 'memory' or 's3'; found 'disk'" in message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["features"].append({"kind": "view", "name": "x", "view": "nope", "aggregate": "txn_count"}), "unknown view 'nope'"),
        (lambda d: d["views"][0]["aggregates"].update(bad={"fn": "sum", "column": "currency"}), "needs a numeric column"),
        (lambda d: d["events"].update(time_column="amount"), "must be a timestamp field"),
        (lambda d: d["views"][0].update(keys=["no_such"]), "key 'no_such' is not an event field"),
        (lambda d: d["views"][0].update(bucket="1 hour"), "expected a duration"),
        (
            lambda d: d["features"].append({"kind": "ratio", "name": "r", "numerator": "later", "denominator": "amount"}),
            "must be a feature declared before it",
        ),
    ],
)
def test_cross_references_are_checked(tmp_path: Path, mutate, expected: str) -> None:
    data = _pipeline()
    mutate(data)
    with pytest.raises(ConfigError, match=expected):
        load_pipeline(_write(tmp_path, "pipeline.yaml", data))


def test_another_dataset_is_only_a_yaml_file(tmp_path: Path) -> None:
    """A sensor dataset: different fields, keys, views and features, no code change."""
    data = {
        "name": "sensors",
        "source": {"topic": "readings"},
        "events": {
            "id_column": "reading_id",
            "time_column": "measured_at",
            "partition_key": "sensor",
            "fields": {
                "reading_id": {"type": "string"},
                "sensor": {"type": "string"},
                "site": {"type": "string"},
                "temperature": {"type": "double", "min": -80, "max": 150},
                "measured_at": {"type": "timestamp"},
            },
        },
        "views": [
            {
                "name": "sensor_10m",
                "keys": ["sensor"],
                "bucket": "10m",
                "aggregates": {"n": {"fn": "count"}, "t_var": {"fn": "variance", "column": "temperature"}},
            },
            {"name": "site_last", "keys": ["site"], "aggregates": {"t_last": {"fn": "last", "column": "temperature"}}},
        ],
    }
    pipeline = load_pipeline(_write(tmp_path, "pipeline.yaml", data))
    assert pipeline.view_by_name["sensor_10m"].bucket == 600
    assert pipeline.events.partition_key == "sensor"


def test_cli_reports_bad_config_without_traceback(tmp_path: Path) -> None:
    data = _pipeline()
    data["events"]["fields"]["amount"]["type"] = "float"
    path = _write(tmp_path, "pipeline.yaml", data)
    result = run_cli("--pipeline", str(path), "config", "check", check=False)
    assert result.returncode == 2
    assert str(path) in result.stderr.replace("\n", "")
    assert "events.fields.amount.type" in result.stderr
    assert "Traceback" not in result.stderr


@given(st.integers(min_value=1, max_value=10_000), st.sampled_from(["s", "m", "h", "d", "w"]))
def test_durations_parse_to_seconds(n: int, unit: str) -> None:
    factor = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_duration(f"{n}{unit}") == n * factor


@pytest.mark.parametrize("bad", ["0s", "1 hour", "-5m", "h", ""])
def test_bad_durations_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_a_refused_feature_is_one_line_without_a_dump_of_the_pipeline(tmp_path: Path) -> None:
    """Regression: a model-level refusal used to print the reason followed by the whole pipeline (~40 lines)."""
    data = _pipeline()
    data["features"] = [{"name": "f", "kind": "view", "view": "nope", "aggregate": "n"}]
    with pytest.raises(ConfigError) as raised:
        load_pipeline(_write(tmp_path, "pipeline.yaml", data))
    lines = str(raised.value).splitlines()
    assert len(lines) == 2 and "nope" in lines[1], lines
    assert "'events'" not in lines[1]


@pytest.mark.parametrize(
    ("mutate", "key", "fix"),
    [
        (
            lambda d: d["views"][0].setdefault("filters", []).append({"column": "channel", "op": "in", "value": "online"}),
            "views[0].filters[0]",
            "value: ['online']",
        ),
        (lambda d: d["events"]["fields"]["event_id"].update(nullable=True), "(top level)", "set nullable: false"),
        (lambda d: d["events"]["fields"].update({"_ingest_seq": {"type": "long"}}), "(top level)", "rename them"),
    ],
    ids=["in-with-a-string", "nullable-id", "system-column-name"],
)
def test_configs_that_load_but_break_things_are_refused(tmp_path: Path, mutate, key: str, fix: str) -> None:
    """Regression: each of these loaded and then broke a layer (Spark vs Arrow filters, first_copies, system columns)."""
    data = _pipeline()
    mutate(data)
    with pytest.raises(ConfigError) as raised:
        load_pipeline(_write(tmp_path, "pipeline.yaml", data))
    message = str(raised.value)
    assert key in message and fix in message, message


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    """Regression: `config show` printed the API token."""
    path = tmp_path / "profile.yaml"
    path.write_text(
        "storage: {kind: local, root: /tmp/x}\n"
        "kafka: {kind: external, bootstrap_servers: ['b:9093'], security_protocol: SASL_SSL, sasl_mechanism: PLAIN,"
        " sasl_username: lf, sasl_password: kafka-pw-123}\n"
        "serving: {token: api-token-456}\n"
    )
    shown = run_cli("--profile", str(path), "config", "show").stdout
    assert "kafka-pw-123" not in shown and "api-token-456" not in shown
    assert '"sasl_username": "lf"' in shown and shown.count('"***"') == 2


def test_a_bad_secret_value_is_not_echoed_in_the_error(tmp_path: Path) -> None:
    """Regression: a config error printed the offending value, secrets included."""
    path = tmp_path / "profile.yaml"
    path.write_text("storage: {kind: local, root: /tmp/x}\nkafka: {kind: embedded}\nserving: {token: [hunter2-secret]}\n")
    with pytest.raises(ConfigError) as raised:
        load_profile(path)
    assert "serving.token" in str(raised.value) and "hunter2" not in str(raised.value)
