"""The serving layer: unified views exact at every step of the Lambda loop, under concurrent reads, in Trino SQL."""

from __future__ import annotations

import re
import threading

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlglot
from deltalake import write_deltalake

from batch_layer.views import expire_speed_rows, recompute_views
from lambdaflow.config import LocalStorage
from lambdaflow.contracts.speed import SpeedTables
from lambdaflow.sample_data import generate
from lambdaflow.schemas import INGEST_SEQ
from lambdaflow.sql import parse_trino
from serving_layer.engine import QueryError, open_session
from serving_layer.sql import view_definitions
from serving_layer.trino import ddl_statements
from serving_layer.verify import verify
from tests.conftest import SpeedEnv, run_cli
from tests.speed_layer.test_speed_layer import drain, send


def assert_verified(env: SpeedEnv, step: str) -> None:
    checks = verify(env.settings)
    bad = [c for c in checks if not c.ok]
    assert not bad, (step, [(c.view, c.differing, c.missing, c.extra, c.examples) for c in bad])
    assert all(c.matching > 0 for c in checks), step


def shifted(events: pa.Table, hours: float, prefix: str) -> pa.Table:
    """The same events moved in time and with new ids (to make late or fresh events)."""
    times = pc.add(pc.cast(events["event_time"], pa.int64()), int(hours * 3600e6))
    events = events.set_column(events.schema.get_field_index("event_time"), "event_time", pc.cast(times, pa.timestamp("us", tz="UTC")))
    ids = pc.binary_join_element_wise(pa.array([prefix] * events.num_rows), events["event_id"], "")
    return events.set_column(0, "event_id", ids)


def test_verify_reports_zero_differences_through_the_whole_loop(speed_env: SpeedEnv, spark) -> None:
    sample = generate(8000, days=4, seed=31).events
    send(speed_env, sample.slice(0, 3000))
    drain(speed_env, idle=3)
    assert_verified(speed_env, "speed only")
    first = recompute_views(speed_env.settings, spark)
    assert_verified(speed_env, "after batch run 1")
    late = shifted(sample.slice(0, 400), -24, "late-")  # event times before the batch cut-off
    send(speed_env, pa.concat_tables([sample.slice(3000, 2500), late]))
    drain(speed_env, idle=3)
    assert_verified(speed_env, "speed after batch run 1, with late events")
    second = recompute_views(speed_env.settings, spark)
    assert second.watermark > first.watermark
    assert_verified(speed_env, "after batch run 2")
    expired = expire_speed_rows(speed_env.settings)
    assert set(expired.values()) == {first.watermark}
    tables = SpeedTables(speed_env.settings)
    for table in tables.speed.values():
        seqs = table.snapshot().to_arrow(columns=[INGEST_SEQ]).column(INGEST_SEQ)
        assert pc.min(seqs).as_py() > first.watermark  # expired through the previous run's W
    assert_verified(speed_env, "after expiry")
    send(speed_env, sample.slice(5500))
    drain(speed_env, idle=3)
    recompute_views(speed_env.settings, spark)
    expire_speed_rows(speed_env.settings)
    assert_verified(speed_env, "after batch run 3 and expiry")
    cli = run_cli("--pipeline", str(speed_env.pipeline_path), "verify", profile=speed_env.profile_path)  # as users run it
    assert cli.stdout.count(" ok ") == 4 and "DIFFERENT" not in cli.stdout


def test_reads_see_no_gap_and_no_double_count_during_publish_and_expiry(speed_env: SpeedEnv, spark) -> None:
    sample = generate(4000, days=3, seed=32).events
    send(speed_env, sample.slice(0, 2000))
    drain(speed_env, idle=3)
    recompute_views(speed_env.settings, spark)
    send(speed_env, sample.slice(2000))
    drain(speed_env, idle=3)
    total = sample.num_rows
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                session = open_session(speed_env.settings)
                for view in ("account_profile", "account_hourly", "merchant_daily"):
                    seen.append(session.query(f'SELECT SUM("txn_count") AS n FROM "unified_{view}"').column("n")[0].as_py())
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):  # publishes and expiries while the readers run
            recompute_views(speed_env.settings, spark, force=True)
            expire_speed_rows(speed_env.settings)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    assert len(seen) > 10
    assert set(seen) == {total}, sorted(set(seen))


def test_generated_trino_sql_parses_and_runs_on_the_embedded_engine(settings) -> None:
    definitions = view_definitions(settings.pipeline)
    assert {"unified_account_hourly", "unified_account_profile", "model_performance", "serving_freshness"} <= set(definitions)
    for statement in ddl_statements(settings):
        if statement.startswith("CALL"):  # sqlglot has no grammar for CALL: check its shape instead
            assert re.fullmatch(
                r"CALL \"\w+\"\.system\.register_table\(schema_name => '\w+', table_name => '\w+', table_location => '[^']+'\)", statement
            )
        else:
            parsed = parse_trino(statement)
            assert isinstance(parsed, sqlglot.exp.Create)
    session = open_session(settings)  # tables may not exist yet: the views still answer (empty)
    for name in definitions:
        session.query(f'SELECT * FROM "{name}" LIMIT 1')


def test_query_errors_point_at_the_sql(settings) -> None:
    session = open_session(settings)
    with pytest.raises(QueryError, match="no_such_table"):
        session.query("SELECT * FROM no_such_table")
    with pytest.raises(QueryError, match="not valid Trino SQL"):
        session.query("SELEC 1 FROM")


def test_cli_query_formats(settings, test_profile) -> None:
    out = run_cli("query", "SELECT 1 AS one, 'a' AS letter", "--format", "json", profile=test_profile).stdout
    assert '"one": 1' in out and '"letter": "a"' in out
    csv = run_cli("query", "SELECT 2 AS two", "--format", "csv", profile=test_profile).stdout
    assert csv.splitlines() == ['"two"', "2"]
    bad = run_cli("query", "SELECT * FROM nowhere", profile=test_profile, check=False)
    assert bad.returncode == 1 and "nowhere" in bad.stderr


def test_sql_can_neither_read_nor_write_files(settings, test_profile, tmp_path) -> None:
    root = tmp_path / "root"
    write_deltalake(str(root / "extra"), pa.table({"n": [1, 2, 3]}))  # a Delta table: an Arrow dataset over files
    local = settings.model_copy(
        update={"profile": settings.profile.model_copy(update={"storage": LocalStorage(kind="local", root=str(root))})}
    )
    session = open_session(local)
    assert session.query('SELECT SUM("n") AS n FROM "extra"').column("n")[0].as_py() == 6  # tables still read
    assert session.query('SELECT COUNT(*) AS n FROM "unified_account_profile"').column("n")[0].as_py() == 0  # and views
    with pytest.raises(QueryError, match=r"/etc/passwd.*file access is off"):
        session.query("SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(QueryError, match=r"file access is off"):
        session.query(f"COPY (SELECT * FROM \"extra\") TO '{tmp_path / 'out.csv'}'")
    assert not (tmp_path / "out.csv").exists()
    for sql in ("SET enable_external_access = true", "RESET enable_external_access", "SET lock_configuration = false"):
        with pytest.raises(QueryError, match="locked"):
            session.query(sql, dialect="duckdb")
    with pytest.raises(QueryError, match=r"file access is off"):
        session.query("SELECT * FROM read_csv('/etc/passwd')")  # still off
    bad = run_cli("query", "SELECT * FROM read_csv('/etc/passwd')", "--engine", "duckdb", profile=test_profile, check=False)
    assert bad.returncode == 1 and "file access is off" in bad.stderr and "root:" not in bad.stdout
