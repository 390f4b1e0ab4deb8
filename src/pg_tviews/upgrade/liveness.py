"""Are TVIEWs alive after a PostgreSQL upgrade or migration: exact, and maintained by a write?

Exactness is `validate` (objects, triggers, every TVIEW equal to its definition, sequences). A
TVIEW can be exact and dead, though: triggers that no longer fire, a runtime function that fails
on the new server. So each TVIEW also gets a write that must reach it: one row of its root is
deleted and the TVIEW must follow (immediate: at once; deferred: when the commit step runs, forced
here with SET CONSTRAINTS; async: the change is queued), all in a transaction that is rolled back,
so nothing changes.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from .validate import Finding, validate

#: bounds of the probe's transaction: it must never wait long on an application's locks
PROBE_SETTINGS = {"lock_timeout": "5s", "statement_timeout": "60s"}


def probe(conn: psycopg.Connection) -> list[Finding]:
    """For every TVIEW: a deleted root row leaves it (or is queued), then everything is rolled back."""
    findings = []
    for entity, schema, table, key, root_schema, root_table, root_key, mode in conn.execute(
        "SELECT id, schema_name, table_name, key_column, root_schema, root_table, root_key, mode"
        "  FROM tviews.entity ORDER BY rank, id"
    ).fetchall():
        name = f"{schema}.{table}"
        tview = sql.Identifier(schema, table)
        row = conn.execute(sql.SQL("SELECT {} FROM {} LIMIT 1").format(sql.Identifier(key), tview)).fetchone()
        if row is None:
            findings.append(Finding("liveness", "ok", f"{name} is empty: no row to probe with"))
            continue
        try:
            reached = _probe_one(conn, entity, tview, sql.Identifier(key), row[0], mode,
                                 sql.Identifier(root_schema, root_table), sql.Identifier(root_key))
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            findings.append(Finding("liveness", "warn", f"{name}: could not probe with a write: {reason}",
                                    "make a write to its sources and check it with `pg-tviews verify`"))
            continue
        where = f"deleting {root_schema}.{root_table} row {row[0]} (rolled back)"
        if reached:
            what = "was queued for the worker" if mode == "async" else "removed the row from it"
            findings.append(Finding("liveness", "ok", f"{name} ({mode}): {where} {what}"))
        else:
            findings.append(Finding("liveness", "fail", f"{name} ({mode}): {where} did not reach it",
                                    "check its triggers with `pg-tviews health`; recreate the TVIEW if they are gone"))
    return findings


def _probe_one(conn: psycopg.Connection, entity: int, tview: sql.Composable, key: sql.Composable, value,
               mode: str, root: sql.Composable, root_key: sql.Composable) -> bool:
    with conn.transaction(force_rollback=True):
        for name, setting in PROBE_SETTINGS.items():
            conn.execute("SELECT pg_catalog.set_config(%s, %s, true)", (name, setting))
        queued = conn.execute("SELECT count(*) FROM tviews.queue WHERE entity_id = %s", (entity,)).fetchone()[0]
        conn.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(root, root_key), (value,))
        if mode == "async":
            return conn.execute("SELECT count(*) FROM tviews.queue WHERE entity_id = %s",
                                (entity,)).fetchone()[0] > queued
        if mode == "deferred":
            conn.execute("SET CONSTRAINTS tviews.tx_commit IMMEDIATE")
        return conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {} WHERE {} = %s)").format(tview, key),
                            (value,)).fetchone()[0]


def check_database(conn: psycopg.Connection) -> list[Finding]:
    """Everything `validate` checks, plus the write probe."""
    return validate(conn).findings + probe(conn)
