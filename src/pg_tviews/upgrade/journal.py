"""The upgrade journal (tviews.upgrade_history), written on a connection of its own.

A migration runs in one transaction that a failure rolls back; the journal must survive that, so
it is written in separate, immediately committed transactions: a row when a run starts, updated
when it ends.

A run that never ends (the server crashed, the client was killed) would stay 'running' forever.
So a catalog migration records the pid of its session and that session holds the advisory lock
(hashtext('pg_tviews.upgrade_history'), id) while it runs; a 'running' entry whose lock nobody
holds belongs to a session that is gone, and `close_interrupted` records it as 'interrupted'.
The migration transaction itself marks its entry 'succeeded' before it commits (`mark_migrated`),
so an interrupted entry always means that the catalog was left at the version it came from.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

#: first key of the advisory lock a migrating session holds on its entry (second key: the id)
LOCK_SQL = "hashtext('pg_tviews.upgrade_history')"
#: error of an interrupted entry (format(): the session's pid, the version the catalog stayed at)
INTERRUPTED = ("interrupted: the session that ran it (pid %s) ended before recording an outcome (server crash"
               " or killed client); its migration transaction was rolled back, the catalog stayed at %s")


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
    session_pid: int | None = None


def has_sessions(conn: psycopg.Connection) -> bool:
    """Whether this catalog's journal records sessions (session_pid, result 'interrupted'); journals
    of catalogs installed before that do not, and their entries are never closed as interrupted."""
    return conn.execute(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid = 'tviews.upgrade_history'::regclass"
        " AND attname = 'session_pid' AND NOT attisdropped)"
    ).fetchone()[0]


def start(conn: psycopg.Connection, from_version: str, to_version: str, method: str, checks: list,
          backup_dir: str | None, *, hold: bool = False) -> int:
    """Open an entry. With `hold`, `conn` is the session that will do the work: its pid is recorded
    and it takes the entry's advisory lock (until `finish`) before the entry becomes visible, so
    that nobody sees a 'running' entry without its lock held."""
    hold = hold and has_sessions(conn)
    with side_connection(conn) as side, side.transaction():
        if not hold:
            return side.execute(
                "INSERT INTO tviews.upgrade_history (from_version, to_version, method, started_at, result, checks,"
                " backup_dir) VALUES (%s, %s, %s, clock_timestamp(), 'running', %s, %s) RETURNING id",
                (from_version, to_version, method, Jsonb(checks), backup_dir),
            ).fetchone()[0]
        entry = side.execute(
            "INSERT INTO tviews.upgrade_history (from_version, to_version, method, started_at, result, checks,"
            " backup_dir, session_pid) VALUES (%s, %s, %s, clock_timestamp(), 'running', %s, %s, %s) RETURNING id",
            (from_version, to_version, method, Jsonb(checks), backup_dir, conn.info.backend_pid),
        ).fetchone()[0]
        conn.execute(f"SELECT pg_advisory_lock({LOCK_SQL}, %s::integer)", (entry,))
        return entry


def mark_migrated(conn: psycopg.Connection, entry: int) -> None:
    """Inside the migration transaction, on the migrating connection: the entry says 'succeeded'
    exactly when the migration commits (`finish` completes it afterwards)."""
    conn.execute(
        "UPDATE tviews.upgrade_history SET result = 'succeeded', finished_at = clock_timestamp(),"
        " duration_ms = extract(epoch FROM clock_timestamp() - started_at) * 1000 WHERE id = %s",
        (entry,),
    )


def finish(conn: psycopg.Connection, entry: int, result: str, error: str | None = None,
           backup_dir: str | None = None) -> None:
    with side_connection(conn) as side:
        side.execute(
            "UPDATE tviews.upgrade_history SET finished_at = clock_timestamp(),"
            " duration_ms = extract(epoch FROM clock_timestamp() - started_at) * 1000,"
            " result = %s, error = %s, backup_dir = coalesce(%s, backup_dir) WHERE id = %s",
            (result, error, backup_dir, entry),
        )
    release(conn, entry)


def release(conn: psycopg.Connection, entry: int) -> None:
    """Give back the entry's advisory lock, if `conn` holds it (a lost connection holds nothing)."""
    if conn.closed or conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
        return
    try:
        conn.execute(
            "SELECT pg_advisory_unlock(l.classid::integer, l.objid::integer) FROM pg_catalog.pg_locks l"
            " WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.objsubid = 2"
            f" AND l.classid = ({LOCK_SQL})::oid AND l.objid = %s::integer::oid AND l.granted",
            (entry,),
        )
    except psycopg.Error:  # the session is gone: so is its lock
        pass


def close_interrupted(conn: psycopg.Connection) -> list[int]:
    """Record as 'interrupted' every 'running' entry whose session is gone (its lock is free);
    returns their ids. A session that is still running keeps its entry 'running'."""
    with side_connection(conn) as side:
        if not has_sessions(side):
            return []
        with side.transaction():
            return [row[0] for row in side.execute(
                "UPDATE tviews.upgrade_history h SET result = 'interrupted', finished_at = clock_timestamp(),"
                " duration_ms = extract(epoch FROM clock_timestamp() - h.started_at) * 1000,"
                " error = format(%s, h.session_pid, h.from_version)"
                " WHERE h.result = 'running' AND h.session_pid IS NOT NULL"
                f"   AND pg_try_advisory_xact_lock({LOCK_SQL}, h.id::integer)"
                " RETURNING h.id",
                (INTERRUPTED,),
            )]


def history(conn: psycopg.Connection) -> list[Entry]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [Entry(**row) for row in cur.execute("SELECT * FROM tviews.upgrade_history ORDER BY id")]
