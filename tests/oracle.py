"""The oracle: a TVIEW is exact when its table equals its definition (EXCEPT ALL both ways).

The definition is the SQL text recorded in the catalog, evaluated with the search_path it was
created under: an independent check of the maintained table, not of pg_tviews' own objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql


@contextmanager
def recorded(conn: psycopg.Connection, name: str) -> Iterator[tuple[int, sql.Composable, sql.Composable]]:
    """(catalog id, table, definition) of a TVIEW, inside a transaction that evaluates the
    definition with the search_path it was created under."""
    entity, schema, table, definition, search_path = conn.execute(
        "SELECT id, schema_name, table_name, definition, search_path FROM tviews.entity"
        " WHERE format('%%I.%%I', schema_name, table_name) = %s OR table_name = %s",
        (name, name),
    ).fetchone()
    with conn.transaction():
        previous = conn.execute("SELECT current_setting('search_path')").fetchone()[0]
        conn.execute("SELECT set_config('search_path', %s, true)", (search_path,))
        yield entity, sql.Identifier(schema, table), sql.SQL(definition)
        conn.execute("SELECT set_config('search_path', %s, true)", (previous,))


def drift(conn: psycopg.Connection, name: str) -> tuple[int, int]:
    """(rows in the table but not in the definition, rows in the definition but not in the table)."""
    with recorded(conn, name) as (_, target, definition):
        extra = conn.execute(
            sql.SQL("SELECT count(*) FROM (SELECT * FROM {} EXCEPT ALL ({})) d").format(target, definition)
        ).fetchone()[0]
        missing = conn.execute(
            sql.SQL("SELECT count(*) FROM (({}) EXCEPT ALL SELECT * FROM {}) d").format(definition, target)
        ).fetchone()[0]
    return extra, missing


def assert_exact(conn: psycopg.Connection, *names: str, context: str = "") -> None:
    if not names:
        names = tuple(r[0] for r in conn.execute("SELECT format('%I.%I', schema_name, table_name) FROM tviews.entity"))
    for name in names:
        extra, missing = drift(conn, name)
        assert (extra, missing) == (0, 0), (
            f"{name} drifted{' ' + context if context else ''}: {extra} extra rows, {missing} missing rows"
            f"{explain_drift(conn, name)}"
        )


def explain_drift(conn: psycopg.Connection, name: str, limit: int = 3) -> str:
    """The first differing rows of a drifted TVIEW, and its pending repairs (for the failure message)."""
    with recorded(conn, name) as (entity, target, definition):
        extra = conn.execute(
            sql.SQL("SELECT * FROM {} EXCEPT ALL ({}) LIMIT {}").format(target, definition, limit)
        ).fetchall()
        missing = conn.execute(
            sql.SQL("({}) EXCEPT ALL SELECT * FROM {} LIMIT {}").format(definition, target, limit)
        ).fetchall()
    repairs = conn.execute("SELECT array_agg(key ORDER BY key) FROM tviews.repair WHERE entity_id = %s",
                           (entity,)).fetchone()[0]
    return f"\n  in the table only: {extra}\n  in the definition only: {missing}\n  pending repairs: {repairs}"
