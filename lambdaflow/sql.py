"""SQL is written once, in Trino's dialect; the embedded engine (DuckDB) runs it transpiled."""

from __future__ import annotations

import functools

import sqlglot

#: The dialect every generated statement is written in.
DIALECT = "trino"


def parse_trino(sql: str) -> sqlglot.exp.Expr:
    """Parse a statement as Trino SQL.

    Raises:
        sqlglot.errors.ParseError: the text is not valid Trino SQL (or only parses as an opaque command).
    """
    parsed = sqlglot.parse_one(sql, read=DIALECT, error_level=sqlglot.ErrorLevel.RAISE)
    if isinstance(parsed, sqlglot.exp.Command):
        raise sqlglot.errors.ParseError(f"not understood as Trino SQL, only as an opaque command: {sql[:80]}")
    return parsed


@functools.lru_cache(maxsize=512)
def to_duckdb(sql: str) -> str:
    """The same statement in DuckDB's dialect (remembered: every engine session transpiles the same views)."""
    return sqlglot.transpile(sql, read=DIALECT, write="duckdb")[0]
