"""The compiler: from a validated Definition to the SQL objects that maintain one TVIEW."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..definition import Definition, Relation
from .lineage import lineage_function, lineage_select
from .names import EVENTS, Names
from .refresh import apply_function, full_function
from .slots import crossing_function
from .sqltext import column_list, ident, literal
from .triggers import create_triggers, trigger_function


@dataclass
class SourcePlan:
    """What is generated on one source relation."""

    position: int
    relation: Relation
    columns_read: list[str]
    functions: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    lineage_sql: list[str] = field(default_factory=list)


@dataclass
class Compiled:
    """Generated SQL for one TVIEW, in creation order (the backing view comes first, separately:
    the table's column types are read from it)."""

    names: Names
    view: str
    table: str
    functions: list[str]
    populate: str
    sources: list[SourcePlan]

    def statements_after_view(self) -> list[str]:
        return [self.table, *self.functions,
                *(fn for s in self.sources for fn in s.functions)]

    def trigger_statements(self) -> list[str]:
        return [t for s in self.sources for t in s.triggers]


def view_statement(definition: Definition, names: Names) -> str:
    return f"CREATE VIEW {names.view} AS\n{definition.sql}"


def compile_tview(definition: Definition, names: Names, columns: list[tuple[str, str]], mode: str,
                  rank: int) -> Compiled:
    """Generate everything but the backing view; `columns` are (name, type) of the backing view."""
    names_only = [c for c, _t in columns]
    coldefs = ",\n    ".join(
        f"{ident(c)} {t}{' NOT NULL' if c == definition.key else ''}" for c, t in columns
    )
    table = (f"CREATE TABLE {names.target} (\n    {coldefs},\n"
             f"    PRIMARY KEY ({ident(definition.key)})\n)")
    functions = [
        apply_function(definition, names, names_only),
        full_function(definition, names, names_only),
        lineage_function(definition, names.lineage),
        crossing_function(definition, names.crossing),
    ]
    sources = []
    for position, relation in enumerate(definition.relations(), start=1):
        plan = SourcePlan(position, relation, definition.columns_read(relation))
        for event in EVENTS:
            plan.functions.append(trigger_function(definition, names, relation, position, event, mode, rank))
            plan.triggers.extend(create_triggers(definition, names, relation, position, event))
        plan.lineage_sql = [lineage_select(definition, lin, "changed_rows s") for lin in definition.lineages_of(relation)]
        sources.append(plan)
    populate = (f"INSERT INTO {names.target} ({column_list(names_only)})"
                f" SELECT {column_list(names_only)} FROM {names.view}")
    return Compiled(names, view_statement(definition, names), table, functions, populate, sources)


__all__ = ["Compiled", "Names", "SourcePlan", "compile_tview", "ident", "literal", "view_statement"]
