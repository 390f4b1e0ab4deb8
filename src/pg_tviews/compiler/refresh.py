"""The refresh statement of a TVIEW: recompute some (or all) keys and write only what differs.

One statement per call, shaped like the best hand-written refresh: compute the fresh rows from
the backing view and upsert them in key order with ``ON CONFLICT ... DO UPDATE ... WHERE (row) IS
DISTINCT FROM (new row)``, so byte-identical rows are not rewritten (no WAL, no dead tuples, no
useless cascade), and delete rows that vanished.

Maintenance must never deadlock, so it never waits blindly for a row another transaction holds:
rows that need a change are first locked with ``FOR UPDATE SKIP LOCKED`` (in key order), and
only those and new keys reach the upsert (its conflict path would lock a row before looking at
it, even one that needs no change); rows
held by another transaction are returned as *contended*, and the caller waits for them safely
(tviews.contend) or leaves them to the commit step. (A cheaper rule that skipped this lock for rows
whose xmax was 0 when the statement started lost that race under concurrent writers: the row can
be locked between the snapshot and the upsert.)
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
        -- existing rows to change or delete
        SELECT t.{key} AS k, f.{key} IS NULL AS gone
          FROM {names.target} t LEFT JOIN fresh f ON f.{key} = t.{key}
         WHERE {tv_where} AND ({differs})
    ), locked AS MATERIALIZED (
        SELECT t.{key} AS k FROM {names.target} t
         WHERE t.{key} IN (SELECT h.k FROM held h)
         ORDER BY t.{key}
           FOR UPDATE SKIP LOCKED
    ), del AS (
        DELETE FROM {names.target} t USING held h
         WHERE t.{key} = h.k AND h.gone AND h.k IN (SELECT l.k FROM locked l)
        RETURNING 1
    ), ups AS (
        INSERT INTO {names.target} AS t ({column_list(columns)})
        SELECT {column_list(columns, 'f')} FROM fresh f
         WHERE f.{key} IN (SELECT l.k FROM locked l)
            OR NOT EXISTS (SELECT FROM {names.target} t WHERE t.{key} = f.{key})
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
