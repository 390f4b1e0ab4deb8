"""The upgrade journal (tviews.upgrade_history), written on a connection of its own.

A migration runs in one transaction that a failure rolls back; the journal must survive that, so
it is written in separate, immediately committed transactions: a row when a run starts, updated
when it ends.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb


def side_connection(conn: psycopg.Connection) -> psycopg.Connection:
    """A second connection to the same database as `conn` (password included)."""
    dsn = make_conninfo(conn.info.dsn, password=conn.info.password) if conn.info.password else conn.info.dsn
    return psycopg.connect(dsn, autocommit=True, application_name="pg_tviews journal")


@dataclass
class Entry:
    id: int
    from_version: str
    to_version: str
    method: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    duration_ms: float | None
    result: str
    error: str | None
    checks: list = field(default_factory=list)
    backup_dir: str | None = None


def start(conn: psycopg.Connection, from_version: str, to_version: str, method: str, checks: list,
          backup_dir: str | None) -> int:
    with side_connection(conn) as side:
        return side.execute(
            "INSERT INTO tviews.upgrade_history (from_version, to_version, method, started_at, result, checks, backup_dir)"
            " VALUES (%s, %s, %s, clock_timestamp(), 'running', %s, %s) RETURNING id",
            (from_version, to_version, method, Jsonb(checks), backup_dir),
        ).fetchone()[0]


def finish(conn: psycopg.Connection, entry: int, result: str, error: str | None = None,
           backup_dir: str | None = None) -> None:
    with side_connection(conn) as side:
        side.execute(
            "UPDATE tviews.upgrade_history SET finished_at = clock_timestamp(),"
            " duration_ms = extract(epoch FROM clock_timestamp() - started_at) * 1000,"
            " result = %s, error = %s, backup_dir = coalesce(%s, backup_dir) WHERE id = %s",
            (result, error, backup_dir, entry),
        )


def history(conn: psycopg.Connection) -> list[Entry]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [Entry(**row) for row in cur.execute("SELECT * FROM tviews.upgrade_history ORDER BY id")]
