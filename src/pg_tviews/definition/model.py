"""What the analyzer learns about a TVIEW definition.

The definition is seen as a graph: every occurrence of a base relation anywhere in the query
(FROM items, joins, correlated subqueries, expanded helper views) is a node; every equality
between columns of two occurrences (join conditions, correlation predicates, ``IN`` subqueries)
is an edge. The root is the occurrence holding the key. Each source occurrence must be connected
to the root by a path of equality edges: that path is its *lineage*, which maps changed rows of
the source to the root keys whose TVIEW rows must be recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    not_null: bool


@dataclass
class Relation:
    """A base relation read by the definition, as found in the catalog (no OIDs kept)."""

    schema: str
    name: str
    kind: str  # "table", "partitioned table"
    columns: dict[str, Column]
    primary_key: tuple[str, ...] | None
    unique_not_null: list[tuple[str, ...]]
    tview_id: int | None = None  # set when the relation is itself a TVIEW

    @property
    def qualified(self) -> tuple[str, str]:
        return (self.schema, self.name)

    def display(self) -> str:
        return f"{self.schema}.{self.name}"

    def row_key(self) -> tuple[str, ...] | None:
        """Columns that identify a row (to pair old and new images of an UPDATE)."""
        if self.primary_key:
            return self.primary_key
        return self.unique_not_null[0] if self.unique_not_null else None


@dataclass(eq=False)
class Occurrence:
    """One reference to a base relation somewhere in the (expanded) query."""

    id: int
    relation: Relation
    alias: str
    location: int | None  # character offset in the definition; None inside an expanded view
    via_view: str | None = None  # name of the helper view it came from
    columns_read: set[str] = field(default_factory=set)
    renames: dict[str, str] = field(default_factory=dict)  # alias column name -> table column name

    def label(self) -> str:
        base = self.relation.display()
        return base if self.alias == self.relation.name else f"{base} AS {self.alias}"


@dataclass(eq=False)
class Edge:
    """Equality of columns between two occurrences: a.cols[i] = b.cols[i] for every i."""

    a: Occurrence
    b: Occurrence
    pairs: list[tuple[str, str]]  # (column of a, column of b)

    def other(self, occ: Occurrence) -> Occurrence:
        return self.b if occ is self.a else self.a

    def columns_at(self, occ: Occurrence) -> list[tuple[str, str]]:
        """Pairs oriented as (column of occ, column of the other end)."""
        if occ is self.a:
            return list(self.pairs)
        return [(b, a) for a, b in self.pairs]


@dataclass
class Hop:
    """One step of a lineage path, from `src` towards the root through `dst`."""

    src: Occurrence
    dst: Occurrence
    pairs: list[tuple[str, str]]  # (column of src, column of dst)


@dataclass
class Lineage:
    """How changed rows of one source occurrence map to root keys."""

    occurrence: Occurrence
    hops: list[Hop]  # from the source to the root; empty when the source is the root
    #: column of the first joined relation equal to the root key, when the last hop reaches the
    #: root key itself (then the root relation need not be joined)
    direct: bool

    @property
    def is_root(self) -> bool:
        return not self.hops

    @property
    def needs_reevaluation(self) -> bool:
        """True when the mapping reads other tables (their rows may change concurrently)."""
        return not (self.is_root or (len(self.hops) == 1 and self.direct))

    def entry_columns(self) -> list[str]:
        """Columns of the source occurrence whose values enter the lineage."""
        if self.is_root:
            return []
        return [src for src, _dst in self.hops[0].pairs]


@dataclass
class OutputColumn:
    name: str
    type: str
    location: int | None


@dataclass
class Definition:
    """A validated TVIEW definition."""

    sql: str  # the SELECT as given (one statement, no trailing semicolon)
    key: str  # output column that is the key
    root: Occurrence
    root_key: str  # column of the root relation equal to the key
    columns: list[OutputColumn]
    occurrences: list[Occurrence]
    edges: list[Edge]
    lineages: list[Lineage]
    helper_views: list[str]

    def relations(self) -> list[Relation]:
        """Distinct base relations read, in first-seen order."""
        seen: dict[tuple[str, str], Relation] = {}
        for occ in self.occurrences:
            seen.setdefault(occ.relation.qualified, occ.relation)
        return list(seen.values())

    def lineages_of(self, relation: Relation) -> list[Lineage]:
        return [lin for lin in self.lineages if lin.occurrence.relation.qualified == relation.qualified]

    def columns_read(self, relation: Relation) -> list[str]:
        """Columns of `relation` the TVIEW reads, in table order (all of them for whole-row use)."""
        read: set[str] = set()
        for occ in self.occurrences:
            if occ.relation.qualified == relation.qualified:
                read |= occ.columns_read
        return [name for name in relation.columns if name in read]

    def tview_sources(self) -> list[Relation]:
        return [rel for rel in self.relations() if rel.tview_id is not None]
