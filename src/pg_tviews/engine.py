"""Creating, maintaining, inspecting and dropping TVIEWs: the Python API behind the CLI.

Every function takes a psycopg connection and works inside the caller's transaction when one is
open (a savepoint otherwise makes each call atomic): a failed creation leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from . import catalog
from .compiler import Compiled, Names, compile_tview, view_statement
from .compiler.names import EVENTS
from .definition import Definition, analyze
from .errors import DefinitionError, NotFound, UsageError
from .identifiers import parse_relation_name

MODES = ("immediate", "deferred", "async")
INTEGER_TYPES = ("smallint", "integer", "bigint")


@dataclass
class SourceInfo:
    schema: str
    table: str
    kind: str
    columns_read: list[str]
    lineage: list[str]

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass
class TView:
    """A TVIEW as recorded in the catalog."""

    id: int
    schema: str
    table: str
    entity_name: str
    definition: str
    key: str
    mode: str
    rank: int
    root: str
    created_at: dt.datetime
    sources: list[SourceInfo] = field(default_factory=list)
    helper_views: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    def as_dict(self) -> dict:
        return asdict(self) | {"name": self.name}


# -- names ------------------------------------------------------------------------------------------


def resolve_target(conn: psycopg.Connection, name: str) -> tuple[str, str]:
    """(schema, table) for a new TVIEW: the given schema, else the first schema of search_path."""
    schema, table = parse_relation_name(name)
    if schema is None:
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        if schema is None:
            raise UsageError("no schema to create the TVIEW in (search_path names no existing schema)",
                             hint="qualify the name: schema.tv_name")
    return schema, table


def _find(conn: psycopg.Connection, name: str) -> int | None:
    schema, table = parse_relation_name(name)
    if schema is not None:
        row = conn.execute("SELECT id FROM tviews.entity WHERE schema_name = %s AND table_name = %s",
                           (schema, table)).fetchone()
        return row[0] if row else None
    row = conn.execute(
        "SELECT e.id FROM tviews.entity e, unnest(current_schemas(false)) WITH ORDINALITY s(name, pos)"
        " WHERE e.schema_name = s.name AND e.table_name = %s ORDER BY s.pos LIMIT 1",
        (table,),
    ).fetchone()
    return row[0] if row else None


def get(conn: psycopg.Connection, name: str) -> TView:
    """The TVIEW called `name` (schema-qualified, or found through search_path)."""
    catalog.require(conn)
    entity = _find(conn, name)
    if entity is None:
        raise NotFound(f"TVIEW {name} does not exist", hint="list TVIEWs with `pg-tviews list`")
    return _load(conn, entity)


def _load(conn: psycopg.Connection, entity: int) -> TView:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM tviews.entity WHERE id = %s", (entity,)).fetchone()
        sources = cur.execute(
            "SELECT * FROM tviews.entity_source WHERE entity_id = %s ORDER BY position", (entity,)
        ).fetchall()
    return TView(
        id=row["id"],
        schema=row["schema_name"],
        table=row["table_name"],
        entity_name=row["entity_name"],
        definition=row["definition"],
        key=row["key_column"],
        mode=row["mode"],
        rank=row["rank"],
        root=f"{row['root_schema']}.{row['root_table']}",
        created_at=row["created_at"],
        helper_views=list(row["helper_views"]),
        sources=[
            SourceInfo(s["schema_name"], s["table_name"], s["kind"], list(s["columns_read"]), list(s["lineage"]))
            for s in sources
        ],
    )


def list_tviews(conn: psycopg.Connection) -> list[TView]:
    catalog.require(conn)
    ids = [r[0] for r in conn.execute("SELECT id FROM tviews.entity ORDER BY rank, schema_name, table_name")]
    return [_load(conn, i) for i in ids]


# -- creation ----------------------------------------------------------------------------------------


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}", hint=f"choose one of: {', '.join(MODES)}")


def _rank(conn: psycopg.Connection, definition: Definition, target: tuple[str, str]) -> int:
    """Dependency depth: 1 + the deepest TVIEW read. A TVIEW reading itself is a cycle."""
    rank = 0
    for occ in definition.occurrences:
        relation = occ.relation
        if relation.qualified == target:
            raise DefinitionError(
                f"the definition reads {relation.display()} itself: TVIEW dependencies must not form a cycle",
                hint="read the source tables instead", construct="dependency cycle",
            )
        if relation.tview_id is not None:
            row = conn.execute("SELECT rank FROM tviews.entity WHERE id = %s", (relation.tview_id,)).fetchone()
            rank = max(rank, row[0])
    return rank + 1


def _check_key_type(definition: Definition) -> None:
    column = definition.root.relation.columns[definition.root_key]
    if column.type not in INTEGER_TYPES:
        raise definition_error_at(
            definition, f"the key {definition.key!r} has type {column.type}; TVIEW keys must be "
            "smallint, integer or bigint", hint="use the root table's integer primary key (pk_<entity>) as the key",
        )


def definition_error_at(definition: Definition, message: str, hint: str | None = None) -> DefinitionError:
    from .definition.positions import definition_error

    location = next((c.location for c in definition.columns if c.name == definition.key), None)
    return definition_error(definition.sql, location, message, hint=hint, construct="key")


def create(
    conn: psycopg.Connection,
    name: str,
    sql_text: str,
    *,
    key: str | None = None,
    mode: str = "immediate",
) -> TView:
    """Create a TVIEW: analyze the definition, generate its table and maintenance, populate it.

    All in one transaction (a savepoint inside the caller's): on any error nothing is left.
    """
    _check_mode(mode)
    with conn.transaction():
        catalog.require(conn)
        conn.execute(catalog.installer.CATALOG_LOCK_SQL)
        schema, table = resolve_target(conn, name)
        display = f"{schema}.{table}"
        if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(schema, table).as_string(conn),)).fetchone()[0]:
            raise UsageError(f"relation {display} already exists",
                             hint="choose another name, or drop the existing relation first")
        if conn.execute("SELECT to_regnamespace(%s) IS NULL", (sql.Identifier(schema).as_string(conn),)).fetchone()[0]:
            raise UsageError(f"schema {schema} does not exist",
                             hint=f"create it first: CREATE SCHEMA {sql.Identifier(schema).as_string(conn)}")
        definition = analyze(conn, sql_text, key=key, name=display)
        _check_key_type(definition)
        rank = _rank(conn, definition, (schema, table))
        search_path = conn.execute("SELECT current_setting('search_path')").fetchone()[0]
        # the catalog is written through its own functions: the table layout differs between versions
        entity = conn.execute(
            "SELECT tviews.register_tview(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (schema, table, definition.sql, search_path, definition.key, definition.root.relation.schema,
             definition.root.relation.name, definition.root_key, mode, rank, definition.helper_views),
        ).fetchone()[0]
        compiled = build(conn, definition, Names(entity, schema, table), mode, rank)
        _register_sources(conn, entity, definition, compiled)
        return _load(conn, entity)


def _register_sources(conn: psycopg.Connection, entity: int, definition: Definition, compiled: Compiled) -> None:
    """Record what the TVIEW reads: per source, the columns read, the lineage and the lookups."""
    needed = lookups(definition)
    for plan in compiled.sources:
        conn.execute(
            "SELECT tviews.register_source(%s, %s, %s, %s, %s, %s, %s, %s)",
            (entity, plan.position, plan.relation.schema, plan.relation.name,
             "tview" if plan.relation.tview_id is not None else "table", plan.columns_read,
             Jsonb(plan.lineage_sql),
             Jsonb([lk for lk in needed if (lk["schema"], lk["table"]) == plan.relation.qualified])),
        )


def build(conn: psycopg.Connection, definition: Definition, names: Names, mode: str, rank: int) -> Compiled:
    """Create the generated objects of a TVIEW and populate its table."""
    conn.execute(view_statement(definition, names))
    compiled = compile_tview(definition, names, view_columns(conn, names), mode, rank)
    for statement in compiled.statements_after_view():
        conn.execute(statement)
    try:
        with conn.transaction():
            conn.execute(compiled.populate)
    except psycopg.errors.UniqueViolation as exc:
        raise definition_error_at(
            definition,
            f"the key {definition.key!r} is not unique in the result of the definition ({exc.diag.message_detail})",
            hint="each root row must give exactly one TVIEW row: aggregate children in correlated subqueries",
        ) from None
    except psycopg.errors.NotNullViolation:
        raise definition_error_at(definition, f"the key {definition.key!r} is NULL for some rows") from None
    except (psycopg.DataError, psycopg.errors.CardinalityViolation) as exc:
        # PostgreSQL checked the definition without running it; some rows make it fail
        raise DefinitionError(
            f"the definition fails on the current rows: {exc.diag.message_primary}",
            hint="make every expression valid for every row (NULLIF for divisors, a subquery returning at most "
                 "one row); later writes producing such rows would fail the same way",
            obj=f"{names.schema}.{names.table}", construct="runtime error",
        ) from None
    for statement in compiled.trigger_statements():
        conn.execute(statement)
    return compiled


# -- maintenance and removal ----------------------------------------------------------------------------------


def refresh(conn: psycopg.Connection, name: str, keys: list[int] | None = None) -> int:
    """Recompute a TVIEW (the given keys, or all rows); returns the number of rows changed."""
    tview = get(conn, name)
    with conn.transaction():
        return conn.execute(
            "SELECT tviews.pg_tviews_refresh(%s, %s)", (sql.Identifier(tview.schema, tview.table).as_string(conn), keys)
        ).fetchone()[0]


def drop(conn: psycopg.Connection, name: str, *, if_exists: bool = False) -> bool:
    """Drop a TVIEW with everything generated for it; returns False when absent and if_exists."""
    catalog.require(conn)
    with conn.transaction():
        entity = _find(conn, name)
        if entity is None:
            if if_exists:
                return False
            raise NotFound(f"TVIEW {name} does not exist", hint="list TVIEWs with `pg-tviews list`")
        tview = _load(conn, entity)
        try:
            return conn.execute(
                "SELECT tviews.pg_tviews_drop(%s)", (sql.Identifier(tview.schema, tview.table).as_string(conn),)
            ).fetchone()[0]
        except psycopg.errors.DependentObjectsStillExist as exc:
            raise UsageError(exc.diag.message_primary, hint=exc.diag.message_hint) from None


# -- inspection ----------------------------------------------------------------------------------------------


@dataclass
class MissingIndex:
    table: str  # schema.table, for people
    columns: list[str]
    purpose: str  # "lineage" (map source changes to keys) or "refresh" (read children per key)
    qualified: tuple[str, str]  # (schema, table): names may contain dots

    @property
    def create_sql(self) -> str:
        table = sql.Identifier(*self.qualified).as_string()
        cols = ", ".join(sql.Identifier(c).as_string() for c in self.columns)
        return f"CREATE INDEX ON {table} ({cols})"


@dataclass
class SourceExplain:
    name: str
    kind: str
    columns_read: list[str]
    lineage: list[str]
    triggers: list[dict]


@dataclass
class Explanation:
    tview: TView
    sources: list[SourceExplain]
    missing_indexes: list[MissingIndex]
    refresh_sql: str
    root_access: str  # how the refresh reaches the root rows for given keys (from EXPLAIN)

    def as_dict(self) -> dict:
        return {
            "tview": self.tview.as_dict(),
            "sources": [asdict(s) for s in self.sources],
            "missing_indexes": [asdict(m) | {"create_sql": m.create_sql} for m in self.missing_indexes],
            "refresh_sql": self.refresh_sql,
            "root_access": self.root_access,
        }


def _has_leading_index(conn: psycopg.Connection, schema: str, table: str, columns: list[str]) -> bool:
    """True when some index of the table starts with one of `columns` (usable for equality lookups)."""
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a"
        "   ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
        " WHERE i.indrelid = %s::regclass AND i.indisvalid AND a.attname = ANY (%s))",
        (sql.Identifier(schema, table).as_string(conn), columns),
    ).fetchone()[0]


def lookups(definition: Definition) -> list[dict]:
    """Equality lookups maintenance performs: lineage joins read each intermediate table by the
    columns of the hop that reaches it; the refresh reads children by the columns correlating them
    with their parent. Each wants an index whose first column is one of `columns`."""
    found: dict[tuple[str, str, tuple[str, ...]], dict] = {}
    for lineage in definition.lineages:
        for index, hop in enumerate(lineage.hops):
            last = index == len(lineage.hops) - 1
            checks = [(hop.src, [s for s, _d in hop.pairs], "refresh")]
            if not (last and lineage.direct):
                checks.append((hop.dst, [d for _s, d in hop.pairs], "lineage"))
            for occ, cols, purpose in checks:
                if occ is definition.root and cols == [definition.root_key]:
                    continue
                rel = occ.relation
                found.setdefault((rel.schema, rel.name, tuple(cols)),
                                 {"schema": rel.schema, "table": rel.name, "columns": cols, "purpose": purpose})
    return list(found.values())


def missing_indexes(conn: psycopg.Connection, definition: Definition) -> list[MissingIndex]:
    """The lookups (see `lookups`) that have no supporting index."""
    return [
        MissingIndex(f"{lk['schema']}.{lk['table']}", lk["columns"], lk["purpose"], (lk["schema"], lk["table"]))
        for lk in lookups(definition)
        if not _has_leading_index(conn, lk["schema"], lk["table"], lk["columns"])
    ]


def explain(conn: psycopg.Connection, name: str) -> Explanation:
    """The maintenance plan of a TVIEW: lineage per source, triggers, missing indexes, refresh SQL."""
    tview = get(conn, name)
    with conn.transaction():
        conn.execute("SELECT set_config('search_path', %s, true)", (
            conn.execute("SELECT search_path FROM tviews.entity WHERE id = %s", (tview.id,)).fetchone()[0],))
        definition = analyze(conn, tview.definition, key=tview.key, name=tview.name)
        names = Names(tview.id, tview.schema, tview.table)
        sources = []
        for source in tview.sources:
            triggers = [
                {"name": tgname, "enabled": enabled != "D", "event": event}
                for tgname, enabled, event in conn.execute(
                    "SELECT t.tgname, t.tgenabled, CASE WHEN t.tgtype & 4 <> 0 THEN 'INSERT'"
                    "   WHEN t.tgtype & 16 <> 0 THEN 'UPDATE' WHEN t.tgtype & 8 <> 0 THEN 'DELETE'"
                    "   ELSE 'TRUNCATE' END"
                    " FROM pg_catalog.pg_trigger t WHERE t.tgrelid = to_regclass(%s)"
                    "   AND t.tgname IN (%s, %s, %s, %s, %s) ORDER BY t.tgname",
                    (sql.Identifier(source.schema, source.table).as_string(conn),
                     *(f"pg_tviews_{tview.id}_{e}" for e in ("ins", "upd", "del", "trunc")),
                     f"~pg_tviews_{tview.id}_gate"),
                ).fetchall()
            ]
            sources.append(SourceExplain(source.name, source.kind, source.columns_read, source.lineage, triggers))
        refresh_sql = conn.execute(
            "SELECT pg_catalog.pg_get_functiondef(to_regprocedure(%s))", (f"{names.apply}(bigint[])",)
        ).fetchone()[0] or ""
        plan = "\n".join(r[0] for r in conn.execute(
            sql.SQL("EXPLAIN SELECT * FROM {} d WHERE d.{} = ANY ('{{1}}'::bigint[])").format(
                sql.SQL(names.view), sql.Identifier(tview.key))
        ))
        root = definition.root.relation
        root_line = next((line.strip() for line in plan.splitlines() if f" on {root.name}" in line), "")
        root_access = root_line.lstrip("-> ").split("  (")[0] if root_line else plan.splitlines()[0]
        return Explanation(tview, sources, missing_indexes(conn, definition), refresh_sql, root_access)


# -- changes -------------------------------------------------------------------------------------------------


def regenerate(conn: psycopg.Connection, tview: TView, mode: str | None = None) -> Compiled:
    """Re-create the generated functions of a TVIEW from its recorded definition (same names).

    Used when its mode changes and by repair tooling; the table and its rows are kept.
    """
    with _recorded_search_path(conn, tview):
        definition = analyze(conn, tview.definition, key=tview.key, name=tview.name)
        names = Names(tview.id, tview.schema, tview.table)
        compiled = compile_tview(definition, names, view_columns(conn, names), mode or tview.mode, tview.rank)
        for statement in compiled.functions + [fn for s in compiled.sources for fn in s.functions]:
            conn.execute(statement)
        return compiled


def view_columns(conn: psycopg.Connection, names: Names) -> list[tuple[str, str]]:
    """(name, type) of the columns of a TVIEW's definition view: its table has these."""
    return conn.execute(
        "SELECT attname, pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute"
        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (names.view,),
    ).fetchall()


def current_definition(conn: psycopg.Connection, tview: TView) -> str | None:
    """The definition as its view tviews.tv<id>_def reads it now (None without the view).

    PostgreSQL keeps a view's query by object, not by name, so this text follows sources and
    columns renamed since the TVIEW was created; names are printed as the TVIEW's recorded
    search_path finds them."""
    names = Names(tview.id, tview.schema, tview.table)
    with _recorded_search_path(conn, tview):
        return conn.execute("SELECT pg_catalog.pg_get_viewdef(to_regclass(%s), true)", (names.view,)).fetchone()[0]


@contextmanager
def _recorded_search_path(conn: psycopg.Connection, tview: TView) -> Iterator[None]:
    """Names in the definition resolve as they did when the TVIEW was created (inside a transaction:
    on an error, rolling it back or back to a savepoint restores the search_path)."""
    search_path = conn.execute("SELECT search_path FROM tviews.entity WHERE id = %s", (tview.id,)).fetchone()[0]
    previous = conn.execute("SELECT current_setting('search_path')").fetchone()[0]
    conn.execute("SELECT set_config('search_path', %s, true)", (search_path,))
    yield
    conn.execute("SELECT set_config('search_path', %s, true)", (previous,))


def analyze_recorded(conn: psycopg.Connection, tview: TView, definition_sql: str | None = None) -> Definition:
    """Analyze the recorded definition of a TVIEW (or `definition_sql` in its place) as at its creation."""
    with _recorded_search_path(conn, tview):
        return analyze(conn, definition_sql or tview.definition, key=tview.key, name=tview.name)


def rebuild(conn: psycopg.Connection, tview: TView, definition_sql: str | None = None) -> Compiled:
    """Re-create the maintenance of a TVIEW: drop its generated triggers and functions wherever
    they are, create them again from the definition, and its view and table when they are gone
    (a table re-created here is populated). With `definition_sql` (the same query under the
    current names of its sources: `current_definition`), the catalog records that text first.

    Repair tooling uses this when objects were dropped, disabled or renamed behind pg_tviews'
    back; the caller checks the rows afterwards. Runs in the caller's transaction.
    """
    names = Names(tview.id, tview.schema, tview.table)
    conn.execute("SELECT pg_advisory_xact_lock(tviews.lock_class(), %s)", (tview.id,))
    # what follows drops objects of this TVIEW: the DDL guard lets them go
    conn.execute("SELECT set_config('pg_tviews.changing', coalesce(current_setting('pg_tviews.changing', true), '')"
                 " || ',' || %s, true)", (str(tview.id),))
    definition = analyze_recorded(conn, tview, definition_sql)
    with _recorded_search_path(conn, tview):
        if definition_sql is not None:
            conn.execute("SELECT tviews.redefine_tview(%s, %s, %s, %s, %s, %s)",
                         (tview.id, definition.sql, definition.root.relation.schema, definition.root.relation.name,
                          definition.root_key, definition.helper_views))
        for trigger, relation in conn.execute(
            "SELECT t.tgname, t.tgrelid::regclass::text FROM pg_catalog.pg_trigger t"
            " WHERE t.tgname = ANY (%s) ORDER BY 1",
            ([f"pg_tviews_{tview.id}_{e}" for e in EVENTS] + [f"~pg_tviews_{tview.id}_gate"],),
        ).fetchall():
            conn.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(trigger), sql.SQL(relation)))
        for (function,) in conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p"
            " WHERE p.pronamespace = 'tviews'::regnamespace AND p.proname LIKE %s",
            (f"tv{tview.id}\\_%",),
        ).fetchall():
            conn.execute(sql.SQL("DROP FUNCTION {}").format(sql.SQL(function)))
        if conn.execute("SELECT to_regclass(%s) IS NULL", (names.view,)).fetchone()[0]:
            conn.execute(view_statement(definition, names))
        compiled = compile_tview(definition, names, view_columns(conn, names), tview.mode, tview.rank)
        if conn.execute("SELECT to_regclass(%s) IS NULL", (names.target,)).fetchone()[0]:
            conn.execute(compiled.table)
            conn.execute(compiled.populate)
        for statement in compiled.functions + [fn for s in compiled.sources for fn in s.functions]:
            conn.execute(statement)
        for statement in compiled.trigger_statements():
            conn.execute(statement)
        if definition_sql is not None:
            _register_sources(conn, tview.id, definition, compiled)
    return compiled


def alter(conn: psycopg.Connection, name: str, *, mode: str) -> TView:
    """Change the refresh mode of a TVIEW. Leaving async mode first applies its queued changes."""
    _check_mode(mode)
    with conn.transaction():
        tview = get(conn, name)
        conn.execute("SELECT pg_advisory_xact_lock(tviews.lock_class(), %s)", (tview.id,))
        if tview.mode == mode:
            return tview
        if tview.mode == "async":
            while conn.execute("SELECT tviews.pg_tviews_process_queue(5000)").fetchone()[0]:
                pass
        regenerate(conn, tview, mode)
        conn.execute("SELECT tviews.set_mode(%s, %s)", (tview.id, mode))
        return _load(conn, tview.id)
