"""The refresh statement of a TVIEW: recompute some (or all) keys and write only what differs.

One statement per call: compute the fresh rows from the backing view, compare them with the
table, lock the rows that must change (``SKIP LOCKED``: maintenance never waits here, so it can
never deadlock here), delete rows that vanished, update rows that differ, insert new ones. Rows
held by another transaction are returned as *contended*; the caller decides whether to wait for
them (tviews.contend) or leave them to the commit step. Byte-identical rows are not rewritten: no
WAL, no dead tuples, no useless cascade.
"""

from __future__ import annotations

from ..definition import Definition
from .names import Names
from .sqltext import column_list, ident, row

_HEADER = """CREATE FUNCTION {fn}({params}) RETURNS tviews.apply_result
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
    cur_where = f" WHERE t.{key} = ANY ({keys})" if keys else ""
    differs = f" OR {row(others, 'c')} IS DISTINCT FROM {row(others, 'f')}" if others else ""
    update = ""
    on_conflict = "DO NOTHING"
    if others:
        update = f"""
    ), upd AS (
        UPDATE {names.target} t SET ({column_list(others)}) = {row(others, 'f')}
          FROM fresh f JOIN locked l ON l.k = f.{key}
         WHERE t.{key} = f.{key}
        RETURNING 1"""
        on_conflict = f"({key}) DO UPDATE SET ({column_list(others)}) = {row(others, 'excluded')}"
    updated = "(SELECT count(*) FROM upd)" if others else "0"
    return f"""    WITH fresh AS MATERIALIZED (
        SELECT {column_list(columns, 'd')} FROM {names.view} d{fresh_where}
    ), cur AS MATERIALIZED (
        SELECT {column_list(columns, 't')} FROM {names.target} t{cur_where}
    ), todo AS MATERIALIZED (
        SELECT f.{key} AS k, c.{key} IS NOT NULL AS present
          FROM fresh f LEFT JOIN cur c ON c.{key} = f.{key}
         WHERE c.{key} IS NULL{differs}
        UNION ALL
        SELECT c.{key}, true FROM cur c WHERE NOT EXISTS (SELECT FROM fresh f WHERE f.{key} = c.{key})
    ), locked AS MATERIALIZED (
        SELECT t.{key} AS k FROM {names.target} t
         WHERE t.{key} IN (SELECT d.k FROM todo d WHERE d.present)
           FOR UPDATE SKIP LOCKED
    ), del AS (
        DELETE FROM {names.target} t USING locked l
         WHERE t.{key} = l.k AND NOT EXISTS (SELECT FROM fresh f WHERE f.{key} = l.k)
        RETURNING 1{update}
    ), ins AS (
        INSERT INTO {names.target} ({column_list(columns)})
        SELECT {column_list(columns, 'f')} FROM fresh f JOIN todo d ON d.k = f.{key} AND NOT d.present
        ON CONFLICT {on_conflict}
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM del) + {updated} + (SELECT count(*) FROM ins),
           ARRAY(SELECT d.k FROM todo d WHERE d.present AND NOT EXISTS (SELECT FROM locked l WHERE l.k = d.k))
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
