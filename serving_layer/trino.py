"""Trino: the production SQL front end over the same Delta tables.

``ddl_statements`` registers every table with the Delta Lake connector
(``system.register_table``) and creates the serving views from the SQL text the
embedded engine also runs. No Trino server runs on the development machine:
the tests parse these statements as Trino SQL and run the views on DuckDB;
the client path is tested against a live server when ``LAMBDAFLOW_TRINO_URL`` is set.
"""

from __future__ import annotations

import pyarrow as pa

from lambdaflow.config import Settings
from lambdaflow.contracts.paths import sql_name, table_uri
from serving_layer.engine import expected_schemas
from serving_layer.sql import create_view_statements


def register_statements(settings: Settings) -> list[str]:
    """``CALL system.register_table`` for every table the serving views read."""
    trino = settings.profile.trino
    out = []
    for name in expected_schemas(settings):
        location = table_uri(settings.profile, name)
        out.append(
            f"CALL \"{trino.catalog}\".system.register_table(schema_name => '{trino.schema_}', "
            f"table_name => '{sql_name(name)}', table_location => '{location}')"
        )
    return out


def ddl_statements(settings: Settings) -> list[str]:
    """Schema, table registrations and views, in the order they must run."""
    trino = settings.profile.trino
    schema = f'CREATE SCHEMA IF NOT EXISTS "{trino.catalog}"."{trino.schema_}"'
    return [schema, *register_statements(settings), *create_view_statements(settings.pipeline, trino.catalog, trino.schema_)]


def connect(settings: Settings):
    import trino

    t = settings.profile.trino
    return trino.dbapi.connect(host=t.host, port=t.port, user=t.user, catalog=t.catalog, schema=t.schema_, http_scheme=t.http_scheme)


def apply_ddl(settings: Settings, statements: list[str]) -> None:
    """Run the statements; a table that is already registered is left as it is."""
    from trino.exceptions import TrinoUserError

    cursor = connect(settings).cursor()
    for statement in statements:
        try:
            cursor.execute(statement)
            cursor.fetchall()
        except TrinoUserError as exc:
            if "already exists" not in str(exc):
                raise


def run_query(settings: Settings, sql: str) -> pa.Table:
    """Run one statement on Trino and return the rows as Arrow."""
    cursor = connect(settings).cursor()
    cursor.execute(sql)
    rows = cursor.fetchall()
    names = [d[0] for d in cursor.description]
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})
