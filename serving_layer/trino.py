"""Trino: the production SQL front end over the same Delta tables.

``ddl_statements`` registers every table with the Delta Lake connector
(``system.register_table``) and creates the serving views from the SQL text the
embedded engine also runs. The tests run them on a real Trino server (the pseudo
profile's, started by ``lambdaflow services up``) and compare every view with DuckDB.

Trino's Delta connector reads ``timestamp`` columns as ``timestamp(3) with time zone``, rounded
to the nearest millisecond (docs/architecture.md §8).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lambdaflow.config import Settings
from lambdaflow.contracts.commits import writer_ids
from lambdaflow.contracts.paths import existing_tables, speed_view, sql_name, table_uri
from lambdaflow.contracts.speed import writer_marks
from lambdaflow.tables import Table
from serving_layer.engine import expected_schemas
from serving_layer.sql import create_view_statements, optional_views


def register_statements(settings: Settings) -> list[str]:
    """``CALL system.register_table`` for every existing table: those the serving views read first, then the rest.

    Trino's connector needs a Delta log at the location, so a table the layers have not written yet is left out
    (see :func:`missing_tables`).
    """
    trino = settings.profile.trino
    present = dict(existing_tables(settings.profile))
    names = [n for n in expected_schemas(settings) if n in present] + sorted(n for n in present if n not in expected_schemas(settings))
    out = []
    for name in names:
        location = table_uri(settings.profile, name)
        out.append(
            f"CALL \"{trino.catalog}\".system.register_table(schema_name => '{trino.schema_}', "
            f"table_name => '{sql_name(name)}', table_location => '{location}')"
        )
    return out


def missing_tables(settings: Settings) -> list[str]:
    """Tables the serving views read that do not exist yet (before the first batch run, e.g.)."""
    present = dict(existing_tables(settings.profile))
    return [name for name in expected_schemas(settings) if name not in present]


def ddl_statements(settings: Settings) -> list[str]:
    """Schema, table registrations and views, in the order they must run.

    The views are left out while a table they read is missing: Trino checks a view's tables when it is
    created. Apply again once the layers have written them (the batch DAG's first run).
    """
    trino = settings.profile.trino
    schema = f'CREATE SCHEMA IF NOT EXISTS "{trino.catalog}"."{trino.schema_}"'
    views = [] if missing_tables(settings) else create_view_statements(settings.pipeline, trino.catalog, trino.schema_)
    present = dict(existing_tables(settings.profile))
    prefix = f'"{trino.catalog}"."{trino.schema_}".'
    views += [
        f'CREATE OR REPLACE VIEW {prefix}"{view}" AS\n{body}' for view, (table, _, body) in optional_views().items() if table in present
    ]
    return [schema, *register_statements(settings), *views]


def connect(settings: Settings) -> Any:
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


@dataclass
class TrinoSession:
    """Trino with the versions of the tables as they were when the session opened.

    Trino reads each table's latest version at query time, so :func:`serving_layer.verify.verify`
    through Trino is exact while no writer commits (a stopped speed layer, no batch run).
    """

    settings: Settings
    versions: dict[str, int] = field(default_factory=dict)
    speed_seq: dict[str, int] = field(default_factory=dict)

    def query(self, sql: str, dialect: str = "trino") -> pa.Table:
        return run_query(self.settings, sql)


def open_trino_session(settings: Settings) -> TrinoSession:
    """A :class:`TrinoSession` with the latest version (and speed micro-batch) of every table."""
    session = TrinoSession(settings)
    writers = writer_ids(settings)
    for name, uri in existing_tables(settings.profile):
        snap = Table(uri).snapshot()
        session.versions[name] = snap.version
        if name.startswith(speed_view("")):  # a txn lookup costs ~0.7 ms: only where read
            session.speed_seq[name] = max(writer_marks(snap, writers))
    return session
