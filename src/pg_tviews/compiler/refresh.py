"""The refresh statement of a TVIEW: recompute some (or all) keys and write only what differs.

One statement per call, shaped like the best hand-written refresh: compute the fresh rows from
the backing view and upsert them in key order with ``ON CONFLICT ... DO UPDATE ... WHERE (row) IS
DISTINCT FROM (new row)``, so byte-identical rows are not rewritten (no WAL, no dead tuples, no
useless cascade), and delete rows that vanished.

Maintenance must never deadlock, so it must not wait blindly for a row another transaction holds.
A row version whose xmax is 0 is held by nobody; only rows with an xmax set (and rows to delete)
are locked first with ``FOR UPDATE SKIP LOCKED``. Rows held by another transaction and needing a
change are returned as *contended*; the caller waits for them safely (tviews.contend) or leaves
them to the commit step. The upsert takes its row locks in key order, so two refreshes that race
past the xmax check lock in the same order and cannot deadlock either.
"""

from __future__ import annotations

from ..definition import Definition
from .names import Names
from .sqltext import column_list, ident, row

_HEADER = """CREATE OR REPLACE FUNCTION {fn}({params}) RETURNS tviews.apply_result
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    r tviews.apply_result;
BEGIN
"""


def refresh_statement(definition: Definition, names: Names, columns: list[str], keys: str | None) -> str:
    """The refresh statement for the keys in the array expression `keys` (all rows when None)."""
    key = ident(definition.key)
    others = [c for c in columns if c != definition.key]
    fresh_where = f" WHERE d.{key} = ANY ({keys})" if keys else ""
    tv_where = f"t.{key} = ANY ({keys})" if keys else "true"
    differs = f"f.{key} IS NULL OR {row(others, 't')} IS DISTINCT FROM {row(others, 'f')}" if others else f"f.{key} IS NULL"
    if others:
        on_conflict = (f"({key}) DO UPDATE SET ({column_list(others)}) = {row(others, 'excluded')}"
                       f" WHERE {row(others, 't')} IS DISTINCT FROM {row(others, 'excluded')}")
    else:
        on_conflict = "DO NOTHING"
    return f"""    WITH fresh AS MATERIALIZED (
        SELECT {column_list(columns, 'd')} FROM {names.view} d{fresh_where}
    ), held AS MATERIALIZED (
        -- rows maybe held by another transaction (xmax set) or to delete, that need a change
        SELECT t.{key} AS k, f.{key} IS NULL AS gone
          FROM {names.target} t LEFT JOIN fresh f ON f.{key} = t.{key}
         WHERE {tv_where} AND (t.xmax <> '0'::xid OR f.{key} IS NULL) AND ({differs})
    ), locked AS MATERIALIZED (
        SELECT t.{key} AS k FROM {names.target} t
         WHERE t.{key} IN (SELECT h.k FROM held h)
           FOR UPDATE SKIP LOCKED
    ), del AS (
        DELETE FROM {names.target} t USING held h
         WHERE t.{key} = h.k AND h.gone AND h.k IN (SELECT l.k FROM locked l)
        RETURNING 1
    ), ups AS (
        INSERT INTO {names.target} AS t ({column_list(columns)})
        SELECT {column_list(columns, 'f')} FROM fresh f
         WHERE NOT EXISTS (SELECT FROM held h WHERE h.k = f.{key} AND h.k NOT IN (SELECT l.k FROM locked l))
         ORDER BY f.{key}
        ON CONFLICT {on_conflict}
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM del) + (SELECT count(*) FROM ups),
           ARRAY(SELECT h.k FROM held h WHERE h.k NOT IN (SELECT l.k FROM locked l))
      INTO r.changed, r.contended;
"""


def apply_function(definition: Definition, names: Names, columns: list[str]) -> str:
    """tviews.tv<id>_apply(keys bigint[]): refresh the given keys."""
    body = refresh_statement(definition, names, columns, "keys")
    return _HEADER.format(fn=names.apply, params="keys bigint[]") + body + "    RETURN r;\nEND\n$fn$"


def full_function(definition: Definition, names: Names, columns: list[str]) -> str:
    """tviews.tv<id>_full(): refresh every row (TRUNCATE of a source, full refresh)."""
    body = refresh_statement(definition, names, columns, None)
    return _HEADER.format(fn=names.full, params="") + body + "    RETURN r;\nEND\n$fn$"
