"""Refresh statistics per TVIEW: counts, rows changed, time spent, last refresh and last error.

Writers never update a shared row for statistics (that would serialise them): every refresh
appends one row to tviews.refresh_event, and tviews.pg_tviews_stats_rollup() folds those events
into one row per TVIEW. The view tviews.pg_tviews_stats adds events not folded yet, so readings
are exact whether or not a rollup ran; rolling up keeps the event table small.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

import psycopg
from psycopg.rows import dict_row

from .. import catalog, engine


@dataclass
class TViewStats:
    tview: str
    entity_name: str
    mode: str
    refresh_count: int
    rows_changed: int
    total_ms: float
    error_count: int
    last_refreshed: dt.datetime | None
    last_refresh_duration_ms: float | None
    last_error: str | None
    last_error_at: dt.datetime | None

    @property
    def mean_ms(self) -> float | None:
        return self.total_ms / self.refresh_count if self.refresh_count else None

    def as_dict(self) -> dict:
        return asdict(self) | {"mean_ms": self.mean_ms}


def rollup(conn: psycopg.Connection) -> int:
    """Fold pending refresh events into the per-TVIEW totals; returns the number of events folded.

    Concurrent rollups are safe: each event row is deleted (and counted) by exactly one of them.
    """
    with conn.transaction():
        return conn.execute("SELECT tviews.pg_tviews_stats_rollup()").fetchone()[0]


def collect(conn: psycopg.Connection, name: str | None = None, *, fold: bool = True) -> list[TViewStats]:
    """Statistics of every TVIEW (or of `name`), after folding pending events when `fold`."""
    catalog.require(conn)
    entity = engine.get(conn, name).id if name else None
    if fold:
        rollup(conn)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT s.tview, s.entity_name, e.mode, s.refresh_count::bigint, s.rows_changed::bigint, s.total_ms,"
            "       s.error_count::bigint, s.last_refreshed, s.last_refresh_duration_ms, s.last_error,"
            "       s.last_error_at"
            "  FROM tviews.pg_tviews_stats s"
            "  JOIN tviews.entity e ON format('%%I.%%I', e.schema_name, e.table_name) = s.tview"
            " WHERE %(entity)s::integer IS NULL OR e.id = %(entity)s"
            " ORDER BY e.rank, e.schema_name, e.table_name",
            {"entity": entity},
        ).fetchall()
    return [TViewStats(**row) for row in rows]
