"""One picture of a database's TVIEWs: every TVIEW (size, mode, rows, freshness, last refresh and
error), the async queue and the health summary, read in one pass for the status screen.

Read-only: statistics are read through tviews.pg_tviews_stats (which includes events not rolled up
yet), so watching the screen never writes to the database.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from .. import catalog, worker
from . import health

#: below this heap size rows are counted exactly; above it the planner's estimate is shown
EXACT_COUNT_BYTES = 64 * 1024 * 1024


@dataclass
class TViewStatus:
    tview: str
    mode: str
    rank: int
    rows: int | None
    rows_estimated: bool
    size_bytes: int | None
    refresh_count: int
    rows_changed: int
    total_ms: float
    error_count: int
    last_refreshed: dt.datetime | None
    last_refresh_duration_ms: float | None
    last_error: str | None
    last_error_at: dt.datetime | None
    pending: int  # queued changes not applied yet (async mode)
    oldest_pending_age_s: float | None

    @property
    def current(self) -> bool:
        """Whether every committed write is reflected (always, except async TVIEWs with a backlog)."""
        return self.pending == 0

    def as_dict(self) -> dict:
        return asdict(self) | {"current": self.current}


@dataclass
class StatusReport:
    taken_at: dt.datetime
    database: str
    catalog_version: str
    tviews: list[TViewStatus]
    queue: worker.QueueStatus
    health: health.HealthReport | None

    def as_dict(self) -> dict:
        return {
            "taken_at": self.taken_at,
            "database": self.database,
            "catalog_version": self.catalog_version,
            "tviews": [t.as_dict() for t in self.tviews],
            "queue": self.queue.as_dict(),
            "health": self.health.as_dict() if self.health else None,
        }


def _tviews(conn: psycopg.Connection) -> list[TViewStatus]:
    """Per TVIEW: catalog row, statistics, table size and row count, queue backlog."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT s.tview, e.mode, e.rank, e.schema_name, e.table_name, c.reltuples,"
            "       pg_total_relation_size(c.oid) AS size_bytes, pg_relation_size(c.oid) AS heap_bytes,"
            "       s.refresh_count::bigint, s.rows_changed::bigint, s.total_ms, s.error_count::bigint,"
            "       s.last_refreshed, s.last_refresh_duration_ms, s.last_error, s.last_error_at,"
            "       q.pending, q.oldest AS oldest_pending_age_s"
            "  FROM tviews.entity e"
            "  JOIN tviews.pg_tviews_stats s ON s.tview = format('%I.%I', e.schema_name, e.table_name)"
            "  LEFT JOIN pg_catalog.pg_class c ON c.oid = to_regclass(s.tview)"
            "  LEFT JOIN LATERAL ("
            "       SELECT count(*) AS pending,"
            "              extract(epoch FROM clock_timestamp() - min(created_at))::float8 AS oldest"
            "         FROM tviews.queue"
            "        WHERE entity_id = e.id AND processed_at IS NULL AND attempts < tviews.queue_max_attempts()) q"
            "    ON true"
            " ORDER BY e.rank, e.schema_name, e.table_name"
        ).fetchall()
    found = []
    for row in rows:
        schema, table, reltuples, heap_bytes = (row.pop(k) for k in ("schema_name", "table_name", "reltuples",
                                                                      "heap_bytes"))
        row["rows"], row["rows_estimated"] = _row_count(conn, schema, table, reltuples, heap_bytes)
        found.append(TViewStatus(**row))
    return found


def _row_count(conn: psycopg.Connection, schema: str, table: str, reltuples: float | None,
               heap_bytes: int | None) -> tuple[int | None, bool]:
    """Exact for small tables; the planner's estimate for large ones (counting would scan them)."""
    if heap_bytes is None:
        return None, False
    if heap_bytes > EXACT_COUNT_BYTES and reltuples is not None and reltuples >= 0:
        return int(reltuples), True
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))).fetchone()[0]
    return count, False


def collect(conn: psycopg.Connection, *, health_sample: int | None = health.DEFAULT_SAMPLE) -> StatusReport:
    """Everything the status screen shows; `health_sample` None skips the health check."""
    installed = catalog.require(conn)
    tviews = _tviews(conn)
    report_health = health.check(conn, health_sample) if health_sample is not None else None
    taken_at, database = conn.execute("SELECT clock_timestamp(), current_database()").fetchone()
    return StatusReport(taken_at, database, installed.version or "", tviews, worker.status(conn), report_health)
