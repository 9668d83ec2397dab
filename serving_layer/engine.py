"""The embedded SQL engine: DuckDB in process over the Delta snapshots.

Each connection registers every table at its latest Delta version (a lazy Arrow
dataset over that snapshot's file list — DuckDB's own ``delta`` extension
cannot be downloaded here) and creates the serving views from the same Trino
SQL text, transpiled. A table that does not exist yet is registered empty with
its schema, so the unified views answer from day one.

Once the tables and views are in place, the connection loses all access to
files and the network (``enable_external_access = false``) and its
configuration is locked, so SQL from a user (``lambdaflow query``) reads the
Lambdaflow tables and views and nothing else: no ``read_csv('/etc/passwd')``,
no ``COPY … TO``, no ``ATTACH``, no extensions. The registered tables keep
working because pyarrow, not DuckDB, reads their files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
from deltalake.exceptions import DeltaError

from lambdaflow.config import Settings
from lambdaflow.contracts.batch import RUNS_SCHEMA, batch_table_schema
from lambdaflow.contracts.commits import writer_ids
from lambdaflow.contracts.master import labels_schema, master_schema
from lambdaflow.contracts.paths import (
    MASTER_EVENTS,
    MASTER_LABELS,
    PREDICTIONS,
    QUARANTINE,
    RUNS,
    batch_view,
    existing_tables,
    speed_view,
    sql_name,
)
from lambdaflow.contracts.speed import QUARANTINE_SCHEMA, predictions_schema, speed_view_schema, writer_marks
from lambdaflow.errors import QueryError, TableError
from lambdaflow.sql import to_duckdb
from lambdaflow.tables import Snapshot, Table
from lambdaflow.views import compile_views, quote
from serving_layer.sql import optional_views, view_definitions

__all__ = ["QueryError", "Session", "expected_schemas", "open_session"]

#: Statements run once every table and view is registered: from then on SQL reaches only those.
LOCKDOWN = ("SET enable_external_access = false", "SET lock_configuration = true")


@dataclass
class Session:
    """A DuckDB connection with every table and serving view, and the Delta version each table was read at."""

    connection: duckdb.DuckDBPyConnection
    versions: dict[str, int] = field(default_factory=dict)
    #: per table, the freshest speed-layer micro-batch committed in the snapshot that was read
    speed_seq: dict[str, int] = field(default_factory=dict)
    #: per table, each speed-layer writer's last micro-batch in it (:func:`lambdaflow.contracts.speed.writer_marks`)
    speed_marks: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def query(self, sql: str, dialect: str = "trino") -> pa.Table:
        """Run one statement (Trino dialect by default) and return the rows.

        Raises:
            QueryError: the statement does not parse or fails.
        """
        import sqlglot

        try:
            text = to_duckdb(sql) if dialect == "trino" else sql
        except sqlglot.errors.ParseError as exc:
            raise QueryError(f"not valid Trino SQL: {exc}") from None
        try:
            return self.connection.sql(text).to_arrow_table()
        except duckdb.PermissionException as exc:
            raise QueryError(f"{exc} (file access is off: SQL here reads only the Lambdaflow tables and views)") from None
        except duckdb.Error as exc:
            raise QueryError(str(exc)) from None


def expected_schemas(settings: Settings) -> dict[str, pa.Schema]:
    """Schema of every table the serving views read, by table name."""
    pipeline = settings.pipeline
    out = {
        MASTER_EVENTS: master_schema(pipeline.events),
        QUARANTINE: QUARANTINE_SCHEMA,
        PREDICTIONS: predictions_schema(settings),
        RUNS: RUNS_SCHEMA,
    }
    if pipeline.labels:
        out[MASTER_LABELS] = labels_schema(pipeline.labels)
    for name, view in compile_views(pipeline).items():
        out[batch_view(name)] = batch_table_schema(view)
        out[speed_view(name)] = speed_view_schema(view)
    return out


def _read(name: str, uri: str) -> tuple[Snapshot, Any]:
    """A table's latest snapshot and a lazy Arrow dataset over it.

    Raises:
        TableError: the table cannot be read (for example a corrupt Delta log); the message names it.
    """
    try:
        snap = Table(uri).snapshot()
        return snap, snap.to_arrow_dataset()
    except TableError as exc:  # keeps its class (TableMissingError: the table went away since it was listed)
        raise type(exc)(f"cannot read table {name} at {uri}: {exc}") from exc
    except (DeltaError, OSError, ValueError) as exc:  # delta-rs and pyarrow errors (ArrowInvalid is a ValueError)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__  # drop delta-rs backtraces
        raise TableError(f"cannot read table {name} at {uri}: {reason}") from exc


def open_session(settings: Settings) -> Session:
    """Register every table's latest snapshot, create the serving views, then shut SQL off from files.

    Raises:
        TableError: a table cannot be read; the message names it.
    """
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        session = Session(con)
        writers = writer_ids(settings)
        present = dict(existing_tables(settings.profile))
        expected = expected_schemas(settings)
        for name, schema in expected.items():
            alias = sql_name(name)
            if name in present:
                snap, dataset = _read(name, present[name])
                con.register(alias, dataset)
                session.versions[name] = snap.version
                if name == MASTER_EVENTS or name.startswith(speed_view("")):  # a txn lookup costs ~0.7 ms: only where read
                    marks = session.speed_marks[name] = writer_marks(snap, writers)
                    session.speed_seq[name] = max(marks)
            else:
                con.register(alias, schema.empty_table())
        for name, uri in present.items():  # tables the pipeline does not know about are queryable too
            if name not in expected:
                snap, dataset = _read(name, uri)
                con.register(sql_name(name), dataset)
                session.versions[name] = snap.version
        for view, body in view_definitions(settings.pipeline).items():
            con.execute(f"CREATE VIEW {quote(view)} AS {to_duckdb(body)}")
        for view, (table, schema, body) in optional_views().items():
            if table not in present:
                con.register(sql_name(table), schema.empty_table())
            con.execute(f"CREATE VIEW {quote(view)} AS {to_duckdb(body)}")
        for statement in LOCKDOWN:
            con.execute(statement)
    except BaseException:
        con.close()
        raise
    return session
