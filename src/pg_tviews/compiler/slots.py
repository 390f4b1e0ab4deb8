"""Commit slots: what a transaction's changes could interfere with, as small integers.

The commit step must recompute what a transaction refreshed at statement time only when another
transaction that committed since then could have made that stale, and two commit steps must
run one after the other only when they could. "Did anyone commit since my snapshot" would be
safe but, with many concurrent writers, always true. Instead every commit step takes the *slots*
of its changes (rows of tviews.commit_slot, in slot order): steps sharing a slot wait for each
other, and a transaction recomputes only when one of its slots was last taken by a transaction
committed after its snapshot.

A slot is a hash of an equality edge of the definition's graph and a value on it (or of a TVIEW
key). A transaction's slots are:

* for every changed row (old and new image), its values on every edge that touches its relation;
* for every lineage path of more than one hop, the values looked up at each further hop (the
  rows the path crosses, which did not change themselves);
* the TVIEW keys it refreshed.

Why that suffices: suppose T's change reaches TVIEW row R through a path of equalities, but T
did not see the whole path (so it did not refresh R, or refreshed it from rows it could not see
change). Follow the path from T's changed row: the first link that T saw differently from the
committed state was changed by another transaction U, on one of the link's two rows. T looked
up that link with the value it saw (a slot of T), and U's changed row carries that value, old
or new, on the same edge (a slot of U): they share a slot, so whichever commits second
recomputes from a fresh snapshot. Two transactions refreshing the same key share its slot.
Hash collisions only cause extra recomputation.
"""

from __future__ import annotations

from ..definition import Definition, Edge, Lineage, Occurrence, Relation
from .lineage import hop_joins, lineage_id, recordset
from .sqltext import ident

#: slots per TVIEW (hash values are reduced to this range); the commit_slot table holds at most
#: this many rows per TVIEW, and a commit that cannot list its slots takes them all
SLOTS = 4096
#: pseudo edge number of TVIEW keys
KEY_EDGE = 0

_INTEGERS = {"smallint", "integer", "bigint"}
_STRINGS = {"text", "character varying", "character", "name"}


def _base(type_name: str) -> str:
    return type_name.split("(")[0].strip()


def common_type(a: str, b: str) -> str | None:
    """A type both sides of an equality can be cast to without changing which values are equal,
    so that equal values hash alike; None when there is no obvious one."""
    a, b = _base(a), _base(b)
    if a in _INTEGERS and b in _INTEGERS:
        return "bigint"
    if a in _INTEGERS | {"numeric"} and b in _INTEGERS | {"numeric"}:
        return "numeric"
    if a in _STRINGS and b in _STRINGS:
        return "text"
    return a if a == b else None


def slot(edge_no: int, values: list[str], types: list[str | None]) -> str:
    """SQL for the slot of `values` (SQL expressions) on edge `edge_no`."""
    if any(t is None for t in types):  # no safe common type: the whole edge is one slot
        return f"(pg_catalog.hashint4({edge_no}) & {SLOTS - 1})"
    casts = ", ".join(f"({v})::{t}" for v, t in zip(values, types))
    return f"(pg_catalog.hash_record(ROW({edge_no}, {casts})) & {SLOTS - 1})"


def key_slot(expr: str) -> str:
    return slot(KEY_EDGE, [expr], ["bigint"])


def _edge_types(edge: Edge) -> list[str | None]:
    return [common_type(edge.a.relation.columns[ca].type, edge.b.relation.columns[cb].type)
            for ca, cb in edge.pairs]


def _values_at(edge: Edge, occ: Occurrence, alias: str) -> list[str]:
    """`alias`.<column of occ> for each pair of the edge, in the edge's order."""
    return [f"{alias}.{ident(mine)}" for mine, _other in edge.columns_at(occ)]


def edge_number(definition: Definition, edge: Edge) -> int:
    return definition.edges.index(edge) + 1


def _edge_of(definition: Definition, src: Occurrence, dst: Occurrence, pairs: list[tuple[str, str]]) -> Edge:
    for edge in definition.edges:
        if {id(edge.a), id(edge.b)} == {id(src), id(dst)} and set(edge.columns_at(src)) == set(pairs):
            return edge
    for edge in definition.edges:  # pairs of several equalities between the same occurrences
        if {id(edge.a), id(edge.b)} == {id(src), id(dst)}:
            return edge
    raise AssertionError("a lineage hop without its edge")  # the analyzer builds hops from edges


def changed_row_slots(definition: Definition, relation: Relation, rows: str) -> list[str]:
    """SELECTs of the slots of changed rows (`rows` aliased s): their values on every edge."""
    selects = []
    for edge in definition.edges:
        for occ in (edge.a, edge.b):
            if occ.relation.qualified == relation.qualified:
                expr = slot(edge_number(definition, edge), _values_at(edge, occ, "s"), _edge_types(edge))
                selects.append(f"SELECT {expr} AS l FROM {rows}")
    return list(dict.fromkeys(selects))


def crossing_slots(definition: Definition, lineage: Lineage, rows: str) -> list[str]:
    """SELECTs of the slots of the rows a multi-hop lineage crosses after its first hop."""
    selects = []
    for index in range(1, len(lineage.hops)):
        hop = lineage.hops[index]
        joins, alias = hop_joins(lineage.hops[:index])
        edge = _edge_of(definition, hop.src, hop.dst, hop.pairs)
        expr = slot(edge_number(definition, edge), _values_at(edge, hop.src, alias), _edge_types(edge))
        selects.append(" ".join([f"SELECT {expr} AS l FROM {rows}", *joins]))
    return selects


def crossing_function(definition: Definition, fn: str) -> str:
    """Function mapping recorded entry values (as for the lineage function) to the slots of the
    rows their lineages cross after the first hop, evaluated at commit."""
    parts = []
    for lin in definition.lineages:
        if lin.needs_reevaluation:
            rows = f"jsonb_array_elements(hop_sets) h(hs), {recordset(definition, lin)}"
            parts += crossing_slots(definition, lin, rows)
    body = "\n        UNION ALL\n        ".join(parts) if parts else "SELECT NULL::integer AS l WHERE false"
    return f"""CREATE OR REPLACE FUNCTION {fn}(hop_sets jsonb) RETURNS integer[]
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT ARRAY(SELECT DISTINCT x.l FROM (
        {body}
    ) x WHERE x.l IS NOT NULL)
$fn$"""
