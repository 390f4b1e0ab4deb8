"""Lineage queries: changed rows of a source → root keys of the TVIEW rows to recompute.

A lineage follows the equality path from the source to the root, joining the intermediate
tables in their current state and keeping only the equi-join conditions (dropping other
predicates over-approximates, which is always correct). When the last hop equates a column with
the root key, the root table itself is not joined.
"""

from __future__ import annotations

from ..definition import Definition, Hop, Lineage
from .sqltext import ident, literal


def hop_joins(hops: list[Hop], start: str = "s") -> tuple[list[str], str]:
    """JOIN clauses following `hops` from the rows aliased `start`, and the alias of the last."""
    joins = []
    previous = start
    for index, hop in enumerate(hops, start=1):
        alias = f"j{index}"
        on = " AND ".join(f"{alias}.{ident(dst)} = {previous}.{ident(src)}" for src, dst in hop.pairs)
        joins.append(f"JOIN {ident(*hop.dst.relation.qualified)} {alias} ON {on}")
        previous = alias
    return joins, previous


def lineage_select(definition: Definition, lineage: Lineage, rows: str) -> str:
    """`SELECT <root key> AS k FROM <rows> s JOIN ...` for changed rows aliased `s`."""
    key = ident(definition.root_key)
    if lineage.is_root:
        return f"SELECT s.{key} AS k FROM {rows}"
    hops = lineage.hops
    if lineage.direct:  # the last hop equates a column with the root key: no need to join the root
        joins, previous = hop_joins(hops[:-1])
        column = next(src for src, dst in hops[-1].pairs if dst == definition.root_key)
        key_expr = f"{previous}.{ident(column)}"
    else:
        joins, previous = hop_joins(hops)
        key_expr = f"{previous}.{key}"
    return " ".join([f"SELECT {key_expr} AS k FROM {rows}", *joins])


def lineage_id(definition: Definition, lineage: Lineage) -> str:
    """Stable identifier of a lineage within its TVIEW (key of the recorded entry values)."""
    return str(definition.lineages.index(lineage) + 1)


def entry_values(definition: Definition, lineage: Lineage, rows: str) -> str:
    """jsonb array of the distinct entry-column values of changed rows, for re-evaluation later."""
    cols = lineage.entry_columns()
    obj = ", ".join(f"{literal(c)}, s.{ident(c)}" for c in cols)
    not_null = " AND ".join(f"s.{ident(c)} IS NOT NULL" for c in cols)
    return f"(SELECT jsonb_agg(DISTINCT jsonb_build_object({obj})) FROM {rows} WHERE {not_null})"


def recordset(definition: Definition, lineage: Lineage) -> str:
    """`jsonb_to_recordset(...) AS s(col type, ...)` reading back entry values of one lineage."""
    relation = lineage.occurrence.relation
    cols = lineage.entry_columns()
    coldefs = ", ".join(f"{ident(c)} {relation.columns[c].type}" for c in cols)
    return f"jsonb_to_recordset(hs -> {literal(lineage_id(definition, lineage))}) AS s({coldefs})"


def lineage_function(definition: Definition, fn: str) -> str:
    """Function mapping recorded entry values (array of {lineage id: [values]}) to root keys."""
    parts = [
        lineage_select(definition, lin, f"jsonb_array_elements(hop_sets) h(hs), {recordset(definition, lin)}")
        for lin in definition.lineages
        if lin.needs_reevaluation
    ]
    body = "\n        UNION ALL\n        ".join(parts) if parts else "SELECT NULL::bigint AS k WHERE false"
    return f"""CREATE OR REPLACE FUNCTION {fn}(hop_sets jsonb) RETURNS bigint[]
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT ARRAY(SELECT DISTINCT x.k::bigint FROM (
        {body}
    ) x WHERE x.k IS NOT NULL)
$fn$"""
