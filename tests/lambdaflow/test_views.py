"""A view compiled three ways (Arrow, Spark, SQL) obeys merge(agg(A), agg(B)) == agg(A ∪ B)."""

from __future__ import annotations

import datetime as dt
import math

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambdaflow.config import PipelineConfig
from lambdaflow.sql import parse_trino, to_duckdb
from lambdaflow.views import CompiledView, compile_views

UTC = dt.timezone.utc
#: A pipeline exercising every aggregate, a filter, bucketed and all-time views, and null values.
PIPELINE = PipelineConfig.model_validate(
    {
        "name": "algebra",
        "source": {"topic": "t"},
        "events": {
            "id_column": "id",
            "time_column": "ts",
            "partition_key": "k",
            "fields": {
                "id": {"type": "string"},
                "k": {"type": "string"},
                "ts": {"type": "timestamp"},
                "x": {"type": "double", "nullable": True},
                "n": {"type": "int", "nullable": True},
                "c": {"type": "string", "nullable": True},
            },
        },
        "views": [
            {
                "name": "hourly",
                "keys": ["k"],
                "bucket": "1h",
                "aggregates": {
                    "cnt": {"fn": "count"},
                    "x_sum": {"fn": "sum", "column": "x"},
                    "x_min": {"fn": "min", "column": "x"},
                    "n_max": {"fn": "max", "column": "n"},
                    "x_mean": {"fn": "mean", "column": "x"},
                    "x_var": {"fn": "variance", "column": "x"},
                    "x_std": {"fn": "stddev", "column": "x"},
                    "c_last": {"fn": "last", "column": "c"},
                    "ts_max": {"fn": "max", "column": "ts"},
                },
            },
            {
                "name": "profile",
                "keys": ["k", "c"],
                "filters": [{"column": "n", "op": ">=", "value": 2}],
                "aggregates": {"cnt": {"fn": "count"}, "n_last": {"fn": "last", "column": "n"}, "c_min": {"fn": "min", "column": "c"}},
            },
        ],
    }
)
VIEWS = compile_views(PIPELINE)
SCHEMA = VIEWS["hourly"].event_schema
T0 = dt.datetime(2026, 3, 1, tzinfo=UTC)

events_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "k": st.sampled_from(["a", "b", "c/d"]),
            # few distinct times, so equal event times (ties for 'last') are common
            "ts": st.integers(0, 12).map(lambda m: T0 + dt.timedelta(minutes=17 * m)),
            "x": st.one_of(st.none(), st.integers(0, 100_000).map(lambda c: c / 100)),
            "n": st.one_of(st.none(), st.integers(-5, 5)),
            "c": st.one_of(st.none(), st.sampled_from(["DE", "FR", "GB"])),
        }
    ),
    min_size=0,
    max_size=40,
)


def to_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{"id": str(i), **r} for i, r in enumerate(rows)], schema=SCHEMA)


def canonical(table: pa.Table, view: CompiledView) -> list[dict]:
    table = table.select(view.result_schema.names).cast(view.result_schema)
    return sorted(table.to_pylist(), key=lambda r: tuple((v is None, str(v)) for v in (r[c] for c in view.group_columns)))


def assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for key in g:
            a, b = g[key], w[key]
            if isinstance(a, float) and isinstance(b, float):
                assert math.isclose(a, b, rel_tol=1e-7, abs_tol=1e-4), (key, g, w)
            else:
                assert a == b, (key, g, w)


def sql_merge(view: CompiledView, *partials: pa.Table) -> pa.Table:
    con = duckdb.connect()
    names = []
    for i, p in enumerate(partials):
        con.register(f"p{i}", p)
        names.append(f"SELECT * FROM p{i}")
    sql = view.finalize_sql(view.merge_sql(" UNION ALL ".join(names)))
    parse_trino(sql)  # the text is Trino SQL
    return con.sql(to_duckdb(sql)).to_arrow_table()


@pytest.mark.parametrize("name", sorted(VIEWS))
@settings(max_examples=150, deadline=None)
@given(rows=events_strategy, data=st.data())
def test_arrow_and_sql_merge_equal_whole(name: str, rows: list[dict], data: st.DataObject) -> None:
    view = VIEWS[name]
    cut = data.draw(st.integers(0, len(rows)))
    a, b, whole = to_table(rows[:cut]), to_table(rows[cut:]), to_table(rows)
    want = canonical(view.finalize_arrow(view.partials_arrow(whole)), view)
    pa_, pb = view.partials_arrow(a), view.partials_arrow(b)
    assert_same(canonical(view.finalize_arrow(view.merge_arrow([pa_, pb])), view), want)
    assert_same(canonical(view.finalize_arrow(view.merge_arrow([pb, pa_])), view), want)  # order-free
    assert_same(canonical(sql_merge(view, pa_, pb), view), want)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=events_strategy, data=st.data())
def test_spark_partials_merge_with_arrow_and_sql(spark, rows: list[dict], data: st.DataObject) -> None:
    """Spark partials of A merged (SQL and Arrow) with Arrow partials of B equal every form of agg(A ∪ B)."""
    cut = data.draw(st.integers(0, len(rows)))
    a, whole = to_table(rows[:cut]), to_table(rows)
    frame_a = spark.createDataFrame(a.to_pylist() or [], schema=_ddl()) if a.num_rows else spark.createDataFrame([], _ddl())
    frame_all = spark.createDataFrame(whole.to_pylist(), schema=_ddl()) if whole.num_rows else spark.createDataFrame([], _ddl())
    for view in VIEWS.values():
        want = canonical(view.finalize_arrow(view.partials_arrow(whole)), view)
        spark_whole = _collect(view.partials_spark(frame_all), view)
        assert_same(canonical(view.finalize_arrow(spark_whole), view), want)
        spark_a = _collect(view.partials_spark(frame_a), view)
        arrow_b = view.partials_arrow(to_table(rows[cut:]))
        assert_same(canonical(sql_merge(view, spark_a, arrow_b), view), want)
        assert_same(canonical(view.finalize_arrow(view.merge_arrow([spark_a, arrow_b])), view), want)


def _ddl() -> str:
    from lambdaflow.tables import spark_ddl

    return spark_ddl(SCHEMA)


def _collect(frame, view: CompiledView) -> pa.Table:
    rows = [r.asDict() for r in frame.collect()]
    fixed = []
    for r in rows:  # Spark hands back naive datetimes in the session time zone (UTC)
        fixed.append({k: v.replace(tzinfo=UTC) if isinstance(v, dt.datetime) and v.tzinfo is None else v for k, v in r.items()})
    return pa.Table.from_pylist(fixed, schema=view.state_schema)


def test_sample_pipeline_sql_parses_as_trino() -> None:
    from lambdaflow.config import load_pipeline
    from tests.conftest import ROOT

    for view in compile_views(load_pipeline(ROOT / "conf/pipeline.yaml")).values():
        parse_trino(view.finalize_sql(view.merge_sql('SELECT * FROM "lambdaflow"."default"."batch_x"')))


def test_bucket_floor_is_epoch_aligned() -> None:
    view = VIEWS["hourly"]
    t = to_table([{"k": "a", "ts": T0 + dt.timedelta(minutes=59, seconds=59), "x": 1.0, "n": 1, "c": "DE"}])
    assert view.partials_arrow(t).column("_bucket").to_pylist() == [T0]
