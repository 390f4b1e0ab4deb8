"""Exact drift of TVIEWs, and its repair.

A TVIEW has drifted when its table differs from its definition: keys the definition yields that
the table lacks (missing), keys the table has that the definition no longer yields (extra), and
keys whose rows differ (different). The comparison reads the table and the backing view
tviews.tv<id>_def range by range of keys (`chunk` rows of the table at a time), so a large TVIEW
is checked without holding everything in memory and with visible progress. Repair recomputes the
drifted keys of each range with tviews.pg_tviews_refresh(name, keys), which is safe next to live
writers: the keys go through the commit step like a write's (docs/concurrency.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from .. import catalog, engine
from ..compiler.names import SCHEMA, Names
from ..errors import CheckFailed, UsageError

KINDS = ("missing", "extra", "different")
DEFAULT_CHUNK = 10_000
DEFAULT_EXAMPLES = 5

#: progress(tview, rows done, rows in total)
Progress = Callable[[str, int, int], None]


@dataclass
class Drift:
    """What differs between one TVIEW and its definition, and what a repair did about it."""

    tview: str
    mode: str
    rows: int  # rows of the table when the check started
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    examples: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in KINDS})
    pending: int = 0  # queued changes not applied yet (async mode): drift they explain is lag
    repaired_rows: int | None = None  # rows the repair changed (None: no repair asked)
    remaining: int | None = None  # drifted keys still found after the repair

    @property
    def drifted(self) -> int:
        return sum(self.counts.values())

    @property
    def exact(self) -> bool:
        return (self.drifted if self.remaining is None else self.remaining) == 0

    def add(self, kind: str, keys: list[int], examples: int) -> None:
        self.counts[kind] += len(keys)
        room = examples - len(self.examples[kind])
        if room > 0:
            self.examples[kind].extend(keys[:room])

    def as_dict(self) -> dict:
        return {
            "tview": self.tview, "mode": self.mode, "rows": self.rows, "exact": self.exact,
            "drifted": self.drifted, "counts": self.counts, "examples": self.examples, "pending": self.pending,
            "repaired_rows": self.repaired_rows, "remaining": self.remaining,
        }


@dataclass
class _Objects:
    """The quoted names one comparison needs."""

    name: str  # schema-qualified, quoted: what pg_tviews_refresh takes
    table: sql.Composable
    view: sql.Composable
    key: sql.Composable

    @classmethod
    def of(cls, conn: psycopg.Connection, tview: engine.TView) -> _Objects:
        names = Names(tview.id, tview.schema, tview.table)
        table = sql.Identifier(tview.schema, tview.table)
        return cls(table.as_string(conn), table, sql.Identifier(SCHEMA, names.view_name), sql.Identifier(tview.key))


def _range(objects: _Objects, lo: int | None, hi: int | None) -> tuple[sql.Composable, list[int]]:
    """The predicate `lo < key <= hi` (either bound may be open) on alias x, and its parameters."""
    conditions, params = [], []
    if lo is not None:
        conditions.append(sql.SQL("x.{} > %s").format(objects.key))
        params.append(lo)
    if hi is not None:
        conditions.append(sql.SQL("x.{} <= %s").format(objects.key))
        params.append(hi)
    return (sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")), params


def _next_bound(conn: psycopg.Connection, objects: _Objects, lo: int | None, chunk: int) -> int | None:
    """The key closing the range that starts after `lo` and holds `chunk` table rows (None: the rest)."""
    where, params = _range(objects, lo, None)
    row = conn.execute(
        sql.SQL("SELECT x.{key} FROM {table} x WHERE {where} ORDER BY x.{key} OFFSET %s LIMIT 1").format(
            key=objects.key, table=objects.table, where=where),
        [*params, chunk - 1],
    ).fetchone()
    return row[0] if row else None


def _compare(conn: psycopg.Connection, objects: _Objects, lo: int | None, hi: int | None) -> dict[str, list[int]]:
    """Drifted keys of one range by kind. Rows are compared whole (EXCEPT ALL, like the oracle):
    a key only on the table side is extra, only on the definition side missing, on both different."""
    where, params = _range(objects, lo, hi)
    query = sql.SQL(
        "WITH t AS (SELECT * FROM {table} x WHERE {where}),"
        "     d AS (SELECT * FROM {view} x WHERE {where}),"
        "     stale AS (SELECT * FROM t EXCEPT ALL SELECT * FROM d),"
        "     fresh AS (SELECT * FROM d EXCEPT ALL SELECT * FROM t)"
        " SELECT k, bool_or(in_table), bool_or(NOT in_table)"
        "   FROM (SELECT s.{key}::bigint AS k, true AS in_table FROM stale s"
        "         UNION ALL SELECT f.{key}::bigint, false FROM fresh f) u"
        "  GROUP BY k ORDER BY k"
    ).format(table=objects.table, view=objects.view, where=where, key=objects.key)
    found: dict[str, list[int]] = {k: [] for k in KINDS}
    for key, in_table, in_definition in conn.execute(query, params * 2):
        found["different" if in_table and in_definition else "extra" if in_table else "missing"].append(key)
    return found


def _repair(conn: psycopg.Connection, objects: _Objects, keys: list[int]) -> int:
    """Recompute `keys` through the runtime (advisory lock, cascade to dependent TVIEWs)."""
    with conn.transaction():
        return conn.execute("SELECT tviews.pg_tviews_refresh(%s, %s)", (objects.name, keys)).fetchone()[0]


def verify_tview(
    conn: psycopg.Connection,
    tview: engine.TView,
    *,
    repair: bool = False,
    chunk: int = DEFAULT_CHUNK,
    examples: int = DEFAULT_EXAMPLES,
    progress: Progress | None = None,
) -> Drift:
    """Compare one TVIEW with its definition range by range; with `repair`, fix each range's drift."""
    objects = _Objects.of(conn, tview)
    rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(objects.table)).fetchone()[0]
    pending = conn.execute(
        "SELECT count(*) FROM tviews.queue WHERE entity_id = %s AND processed_at IS NULL", (tview.id,)
    ).fetchone()[0]
    drift = Drift(tview.name, tview.mode, rows, pending=pending)
    if repair:
        drift.repaired_rows, drift.remaining = 0, 0
    done, lo = 0, None
    while True:
        hi = _next_bound(conn, objects, lo, chunk)
        found = _compare(conn, objects, lo, hi)
        for kind in KINDS:
            drift.add(kind, found[kind], examples)
        keys = sorted(k for kind in KINDS for k in found[kind])
        if repair and keys:
            drift.repaired_rows += _repair(conn, objects, keys)
            drift.remaining += sum(len(v) for v in _compare(conn, objects, lo, hi).values())
        done = min(rows, done + chunk) if hi is not None else rows
        if progress:
            progress(tview.name, done, rows)
        if hi is None:
            return drift
        lo = hi


def verify(
    conn: psycopg.Connection,
    name: str | None = None,
    *,
    repair: bool = False,
    chunk: int = DEFAULT_CHUNK,
    examples: int = DEFAULT_EXAMPLES,
    progress: Progress | None = None,
) -> list[Drift]:
    """Drift of TVIEW `name`, or of every TVIEW in dependency order: a repair cascades into the
    TVIEWs that read the repaired one, and those are checked after it."""
    if chunk < 1:
        raise UsageError(f"the chunk size must be at least 1, not {chunk}")
    catalog.require(conn)
    tviews = [engine.get(conn, name)] if name else engine.list_tviews(conn)
    return [verify_tview(conn, t, repair=repair, chunk=chunk, examples=examples, progress=progress) for t in tviews]


def require_exact(drifts: list[Drift]) -> None:
    """Raise CheckFailed when some TVIEW still differs from its definition."""
    bad = [d for d in drifts if not d.exact]
    if not bad:
        return
    if any(d.pending for d in bad):
        hint = "queued changes are not applied yet: drain the queue (`pg-tviews queue --drain`), then verify again"
    elif any(d.remaining is not None for d in bad):
        hint = "rows still differ after the repair: writers may be changing them; run it again"
    else:
        hint = "run `pg-tviews verify --repair` to recompute the drifted rows"
    raise CheckFailed(f"{len(bad)} TVIEWs differ from their definition: {', '.join(d.tview for d in bad)}",
                      hint=hint)
