"""The definition analyzer: from SELECT text to a validated Definition, or a DefinitionError.

PostgreSQL first checks that the SELECT is valid SQL at all (its own error and position are
reported). Then the parse tree (pglast, PostgreSQL's parser) is walked once: every FROM item and
subquery gets a scope, every column reference is resolved to the occurrence of a base relation it
reads, and equalities between occurrences become edges of the lineage graph. Constructs whose
changes cannot be mapped to root keys by equalities are rejected with their line:column.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import psycopg
from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind, BoolExprType, JoinType, NullTestType, SetOperation, SubLinkType
from pglast.parser import ParseError, scan

from .model import Definition, Edge, Hop, Lineage, Occurrence, OutputColumn, Relation
from .positions import char_offset, definition_error
from .relations import RelationLookup

KEY_PREFIX = "pk_"

#: PostgreSQL accepts nesting deeper than the recursive walk below (and pglast's C parser, which
#: crashes the process on left-deep chains of about 20,000 operators) can take: definitions are
#: bounded before they are parsed (tokens) and before they are walked (parse tree depth).
MAX_TOKENS = 20_000
MAX_DEPTH = 400

#: SQL keywords whose value is the time of the transaction, by SQLValueFunction operation number
TIME_KEYWORDS = ("CURRENT_DATE", "CURRENT_TIME", "CURRENT_TIME", "CURRENT_TIMESTAMP", "CURRENT_TIMESTAMP",
                 "LOCALTIME", "LOCALTIME", "LOCALTIMESTAMP", "LOCALTIMESTAMP")

#: names PostgreSQL reserves for the system columns of every table
SYSTEM_COLUMNS = ("tableoid", "xmin", "cmin", "xmax", "cmax", "ctid")

#: (type, part of it) for each given type with a part that has no default btree or hash equality,
#: looking through domains, arrays and composite types the way PostgreSQL's type cache does
EQUALITY_LACKING_SQL = """
WITH RECURSIVE part(given, oid) AS (
    SELECT g.name, g.name::pg_catalog.regtype::oid FROM unnest(%s::text[]) AS g(name)
  UNION
    SELECT p.given, x.oid
      FROM part p JOIN pg_catalog.pg_type t ON t.oid = p.oid
     CROSS JOIN LATERAL (
           SELECT t.typelem WHERE t.typcategory = 'A' AND t.typelem <> 0
           UNION ALL SELECT t.typbasetype WHERE t.typtype = 'd'
           UNION ALL SELECT a.atttypid FROM pg_catalog.pg_attribute a
                      WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
           ) x(oid)
)
SELECT p.given, pg_catalog.format_type(p.oid, NULL)
  FROM part p JOIN pg_catalog.pg_type t ON t.oid = p.oid
 WHERE t.typtype = 'b' AND t.typcategory <> 'A'
   AND NOT EXISTS (
       SELECT FROM pg_catalog.pg_opclass c JOIN pg_catalog.pg_am am ON am.oid = c.opcmethod
        WHERE am.amname IN ('btree', 'hash') AND c.opcdefault
          AND (c.opcintype = t.oid OR EXISTS (
               SELECT FROM pg_catalog.pg_cast k
                WHERE k.castsource = t.oid AND k.casttarget = c.opcintype AND k.castmethod = 'b'
                  AND k.castcontext = 'i')))
"""

AGGREGATE_HINT = "aggregate children per root row in a correlated subquery, e.g. (SELECT jsonb_agg(...) FROM child c WHERE c.fk = root.pk)"


@dataclass(eq=False)
class Item:
    """A FROM item visible in a scope: a base relation occurrence or a derived table."""

    alias: str
    columns: list[str]
    occurrence: Occurrence | None = None
    derived: Scope | None = None
    #: for derived items: output column -> (occurrence, column) when it is a plain column
    origins: dict[str, tuple[Occurrence, str] | None] = field(default_factory=dict)
    relname: str | None = None  # the relation name for unaliased references
    schema: str | None = None


@dataclass(eq=False)
class Scope:
    """One SELECT level: its FROM items and how it relates to the enclosing level."""

    parent: Scope | None  # the enclosing level (structure: correlation, nesting)
    kind: str  # "top", "derived", "sublink", "view", "cte"
    location: int | None
    #: where names not found here are looked up: the parent, except for non-LATERAL derived
    #: tables and CTEs (they see outer levels but not their siblings) and views (nothing)
    lookup_parent: Scope | None = None
    inherit_lookup: bool = True
    items: list[Item] = field(default_factory=list)
    ctes: dict[str, ast.CommonTableExpr] = field(default_factory=dict)
    correlated: bool = False
    aggregates: list[int | None] = field(default_factory=list)
    windows: list[int | None] = field(default_factory=list)
    limits: list[int | None] = field(default_factory=list)
    distinct_on: list[int | None] = field(default_factory=list)
    occurrences: list[Occurrence] = field(default_factory=list)
    children: list[Scope] = field(default_factory=list)
    distinct: bool = False
    view_name: str | None = None

    def __post_init__(self) -> None:
        if self.parent is not None:
            self.parent.children.append(self)
        if self.inherit_lookup and self.lookup_parent is None:
            self.lookup_parent = self.parent

    def all_occurrences(self) -> list[Occurrence]:
        found = list(self.occurrences)
        for child in self.children:
            found.extend(child.all_occurrences())
        return found

    def spans_roots(self) -> bool:
        """True when rows of this level may belong to several roots (top level, derived tables
        and views in the top-level FROM); False inside a correlated subquery or LATERAL derived
        table, which runs per row."""
        scope: Scope | None = self
        while scope is not None:
            if scope.kind in ("sublink", "derived") and scope.correlated:
                return False
            scope = scope.parent
        return True


class Analyzer:
    """One analysis of one definition; create a new one per definition."""

    def __init__(self, conn: psycopg.Connection, sql: str, *, name: str | None = None):
        self.conn = conn
        self.sql = sql
        self.name = name
        self.lookup = RelationLookup(conn)
        self.occurrences: list[Occurrence] = []
        self.edges: list[Edge] = []
        self.helper_views: list[str] = []
        self._aggregate_cache: dict[str, bool] = {}
        #: location in the definition of the view reference being expanded (errors inside views)
        self._view_location: list[int | None] = []
        #: parse tree depth of the definition plus the helper views being expanded
        self._depth = 0
        #: ids of occurrences on the nullable side of an outer join (their columns may be NULL)
        self._nullable: set[int] = set()
        #: (occurrence id, column, occurrence id, column) equalities stated in the top-level query
        self._top_equalities: set[tuple[int, str, int, str]] = set()

    # -- errors ----------------------------------------------------------------------------------

    def error(self, location: int | None, message: str, hint: str | None = None, construct: str | None = None):
        if self._view_location:
            message = f"{message} (inside helper view {self._view_location[-1][1]})"
            location = self._view_location[-1][0]
        return definition_error(self.sql, location, message, hint=hint, construct=construct, obj=self.name)

    def _loc(self, location: int | None) -> int | None:
        """Locations inside expanded views are not positions in the definition."""
        return None if self._view_location else location

    # -- entry point ---------------------------------------------------------------------------

    def analyze(self, key: str | None = None) -> Definition:
        self._check_session()
        stmt = self._parse()
        self._depth = self._check_depth(stmt, MAX_DEPTH)
        output = self._check_with_postgres()
        top = Scope(None, "top", 0)
        self._select(stmt, top)
        self._check_select_shape(stmt, top)
        self._check_scopes(top)
        columns, origins = self._output_columns(stmt, top, output)
        key_name = self._key_name(columns, key)
        key_index = [c.name for c in columns].index(key_name)
        root, root_key = self._root(columns[key_index], origins[key_index], top)
        lineages = self._lineages(root, root_key, top)
        self._check_multiplicity(stmt, top, root)
        self._check_volatility()
        self._check_comparable(columns)
        return Definition(
            sql=self.sql,
            key=key_name,
            root=root,
            root_key=root_key,
            columns=columns,
            occurrences=self.occurrences,
            edges=self.edges,
            lineages=lineages,
            helper_views=self.helper_views,
        )

    # -- parsing and PostgreSQL's own validation -------------------------------------------------

    def _check_session(self) -> None:
        """pglast reads string literals as PostgreSQL does with standard_conforming_strings on; with
        it off, backslashes in literals would make PostgreSQL run another statement than the one
        analyzed (for instance one reading tables that get no triggers)."""
        if self.conn.execute("SELECT current_setting('standard_conforming_strings')").fetchone()[0] != "on":
            raise self.error(None, "standard_conforming_strings is off in this session: the definition would not "
                             "be read the way it is analyzed",
                             hint="SET standard_conforming_strings = on (the default)",
                             construct="standard_conforming_strings")

    def _check_text(self) -> None:
        """Text that pglast and PostgreSQL cannot both read, or that pglast cannot parse safely."""
        nul = self.sql.find("\x00")
        if nul >= 0:
            raise self.error(nul, "the definition contains a NUL character", hint="remove it",
                             construct="NUL character")
        try:
            self.sql.encode()
        except UnicodeEncodeError as exc:
            raise self.error(exc.start, "the definition is not valid Unicode text (it contains a lone surrogate)",
                             hint="pass the text decoded from UTF-8", construct="encoding") from None
        try:
            tokens = len(scan(self.sql))
        except Exception:  # not even scannable: the parser reports the error with its position
            tokens = 0
        if tokens > MAX_TOKENS:
            raise self.error(None, f"the definition has {tokens} tokens, more than the {MAX_TOKENS} pg_tviews analyzes",
                             hint="split it: read other TVIEWs or helper views", construct="definition size")

    def _check_depth(self, stmt: ast.Node, budget: int) -> int:
        """Depth of a parse tree, measured without recursion; the analysis walks it recursively, so a
        tree deeper than `budget` is rejected before the walk could exhaust Python's stack."""
        deepest = 0
        pending: list[tuple[object, int]] = [(stmt, 1)]
        while pending:
            node, depth = pending.pop()
            if depth > budget:
                location = getattr(node, "location", None)
                raise self.error(self._loc(location if isinstance(location, int) and location >= 0 else None),
                                 f"the definition is nested more than {MAX_DEPTH} levels deep",
                                 hint="flatten long chains of operators or nested subqueries",
                                 construct="nesting depth")
            deepest = max(deepest, depth)
            children = node if isinstance(node, (list, tuple)) else [getattr(node, attr) for attr in node]
            pending.extend((child, depth + 1) for child in children if isinstance(child, (ast.Node, list, tuple)))
        return deepest

    def _parse(self) -> ast.SelectStmt:
        self._check_text()
        try:
            statements = parse_sql(self.sql)
        except ParseError as exc:
            # pglast reports a 1-based position, or none for "at end of input"
            location = exc.args[1] - 1 if len(exc.args) > 1 and isinstance(exc.args[1], int) else len(self.sql)
            raise self.error(location, f"syntax error: {exc.args[0]}", construct="syntax") from None
        if len(statements) != 1:
            location = statements[1].stmt_location if len(statements) > 1 else 0
            raise self.error(location, f"a definition is exactly one SELECT statement, found {len(statements)}",
                             hint="remove the other statements", construct="multiple statements")
        stmt = statements[0].stmt
        if not isinstance(stmt, ast.SelectStmt) or stmt.valuesLists:
            kind = "VALUES" if isinstance(stmt, ast.SelectStmt) else type(stmt).__name__.replace("Stmt", "").upper()
            raise self.error(0, f"a definition must be a SELECT, not {kind}", construct=kind)
        # keep the statement text only (drops a trailing semicolon and surrounding blanks)
        raw = statements[0]
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(self.sql)
        body = self.sql[start:end].strip()
        if body.endswith(";"):
            body = body[:-1].rstrip()
        if start or body != self.sql:
            # positions must stay valid for the text we keep: reparse the trimmed text
            self.sql = body
            return self._parse()
        # checked before PostgreSQL sees the statement, which would reject them less clearly
        if stmt.intoClause is not None:
            raise self.error(0, "SELECT INTO is not allowed", hint="give the SELECT alone; pg_tviews creates the table",
                             construct="SELECT INTO")
        if stmt.lockingClause:
            raise self.error(self._keyword_location(("FOR",), depth=0), "FOR UPDATE/SHARE is not allowed in a definition",
                             hint="remove the locking clause", construct="locking clause")
        return stmt

    def _check_with_postgres(self) -> list[tuple[str, str]]:
        """Let PostgreSQL validate the SELECT (names, types, ambiguity): (column, type) pairs."""
        prefix = "SELECT * FROM (\n"
        probe = f"{prefix}{self.sql}\n) AS pg_tviews_probe LIMIT 0"
        try:
            with self.conn.transaction():
                cur = self.conn.execute(probe)
        except psycopg.errors.Error as exc:
            diag = exc.diag
            position = None
            if diag.statement_position:
                position = int(diag.statement_position) - 1 - len(prefix)
                position = position if 0 <= position <= len(self.sql) else None
            message = (diag.message_primary or str(exc)).strip()
            raise self.error(position, f"PostgreSQL rejects the definition: {message}",
                             hint=diag.message_hint or None, construct="sql") from None
        types = []
        for column in cur.description:
            row = self.conn.execute("SELECT pg_catalog.format_type(%s, NULL)", (column.type_code,)).fetchone()
            types.append((column.name, row[0]))
        return types

    # -- the walk ----------------------------------------------------------------------------------

    def _select(self, stmt: ast.SelectStmt, scope: Scope) -> list[tuple[str, tuple[Occurrence, str] | None]]:
        """Analyze one SELECT level; returns its output columns with their origins."""
        if stmt.op != SetOperation.SETOP_NONE:
            raise self.error(self._setop_location(stmt), "set operations (UNION, INTERSECT, EXCEPT) are not supported",
                             hint="build each part as a correlated subquery, or make separate TVIEWs",
                             construct="set operation")
        if stmt.intoClause is not None or stmt.lockingClause:
            raise self.error(None if self._view_location else self._keyword_location(("INTO", "FOR")),
                             "SELECT INTO and FOR UPDATE/SHARE are not allowed in a definition",
                             hint="remove the clause", construct="locking clause")
        if stmt.withClause is not None:
            if stmt.withClause.recursive:
                raise self.error(self._loc(stmt.withClause.location), "recursive CTEs (WITH RECURSIVE) are not supported",
                                 hint="maintain the recursive structure in a table, or compute it in the application",
                                 construct="recursive CTE")
            for cte in stmt.withClause.ctes:
                scope.ctes[cte.ctename] = cte
        if stmt.limitCount is not None or stmt.limitOffset is not None:
            depth = 0 if scope.kind == "top" else None
            scope.limits.append(None if self._view_location else self._keyword_location(("LIMIT", "OFFSET"), depth))
        if stmt.distinctClause:
            if stmt.distinctClause[0] is None:
                scope.distinct = True
            else:
                scope.distinct_on.append(self._loc(getattr(stmt.distinctClause[0], "location", None)))
        if stmt.windowClause:
            scope.windows.append(self._loc(getattr(stmt.windowClause[0], "location", None)))
        for item in stmt.fromClause or ():
            self._from_item(item, scope)
        for clause in (stmt.whereClause, stmt.havingClause):
            if clause is not None:
                self._expr(clause, scope, conjunct=True)
        for node in (*(stmt.groupClause or ()), *(stmt.sortClause or ()), *(stmt.distinctClause or ())):
            if node is not None:
                self._expr(node, scope)
        outputs = []
        for target in stmt.targetList or ():
            self._expr(target.val, scope)
            outputs.extend(self._target_outputs(target, scope))
        return outputs

    def _target_outputs(self, target: ast.ResTarget, scope: Scope):
        val = target.val
        if isinstance(val, ast.ColumnRef) and isinstance(val.fields[-1], ast.A_Star):
            items = scope.items if len(val.fields) == 1 else [self._find_item(val.fields[:-1], scope, val.location)[0]]
            return [(col, self._item_origin(item, col)) for item in items for col in item.columns]
        name = target.name
        if name is None:
            if isinstance(val, ast.ColumnRef):
                name = val.fields[-1].sval
            elif isinstance(val, ast.TypeCast) and isinstance(val.arg, ast.ColumnRef):
                name = val.arg.fields[-1].sval
            else:
                name = "?column?"
        return [(name, self._origin(val, scope))]

    def _from_item(self, node, scope: Scope) -> None:
        if isinstance(node, ast.RangeVar):
            self._range_var(node, scope)
        elif isinstance(node, ast.JoinExpr):
            if node.isNatural:
                raise self.error(self._loc(self._join_location(node)), "NATURAL joins are not supported",
                                 hint="write the join condition with ON or USING", construct="NATURAL JOIN")
            alias = node.alias or node.join_using_alias
            if alias is not None:
                raise self.error(self._loc(self._first_location(node)),
                                 f"aliased joins ({alias.aliasname}) are not supported",
                                 hint="refer to the joined tables by their own aliases", construct="aliased join")
            start = len(scope.items)
            self._from_item(node.larg, scope)
            left_items = list(scope.items)
            self._from_item(node.rarg, scope)
            right_items = scope.items[len(left_items):]
            nullable = {JoinType.JOIN_LEFT: right_items, JoinType.JOIN_RIGHT: left_items[start:],
                        JoinType.JOIN_FULL: left_items[start:] + right_items}.get(node.jointype, [])
            for item in nullable:
                occurrences = [item.occurrence] if item.occurrence is not None else item.derived.all_occurrences()
                self._nullable.update(occ.id for occ in occurrences)
            for using in node.usingClause or ():
                col = using.sval
                left = next((it for it in reversed(left_items) if col in it.columns), None)
                right = next((it for it in right_items if col in it.columns), None)
                if left is not None and right is not None:
                    self._add_edge(self._item_origin(left, col), self._item_origin(right, col), scope)
                self._mark_item_read(left, col)
                self._mark_item_read(right, col)
            if node.quals is not None:
                self._expr(node.quals, scope, conjunct=True)
        elif isinstance(node, ast.RangeSubselect):
            child = Scope(scope, "derived", self._loc(getattr(node.alias, "location", None)),
                          lookup_parent=scope if node.lateral else scope.lookup_parent, inherit_lookup=False)
            outputs = self._select(node.subquery, child)
            self._add_derived(scope, child, node.alias.aliasname if node.alias else "subquery", outputs, node.alias)
        elif isinstance(node, ast.RangeFunction):
            raise self.error(self._loc(self._first_location(node)), "functions in FROM are not supported",
                             hint="use a correlated subquery in the select list instead", construct="function in FROM")
        else:
            raise self.error(self._loc(self._first_location(node)), f"{type(node).__name__} in FROM is not supported",
                             construct=type(node).__name__)

    def _range_var(self, node: ast.RangeVar, scope: Scope) -> None:
        alias = node.alias.aliasname if node.alias else node.relname
        if node.schemaname is None:
            cte_scope = scope
            while cte_scope is not None and node.relname not in cte_scope.ctes:
                cte_scope = cte_scope.lookup_parent
            if cte_scope is not None:
                cte = cte_scope.ctes[node.relname]
                child = Scope(scope, "cte", self._loc(node.location), lookup_parent=cte_scope.lookup_parent,
                              inherit_lookup=False)
                outputs = self._select(cte.ctequery, child)
                if cte.aliascolnames:
                    outputs = [(c.sval, o) for c, (_n, o) in zip(cte.aliascolnames, outputs)]
                self._add_derived(scope, child, alias, outputs, node.alias)
                return
        found = self.lookup.find(node.schemaname, node.relname)
        display = f"{node.schemaname}.{node.relname}" if node.schemaname else node.relname
        if found is None:
            raise self.error(self._loc(node.location), f"relation {display} does not exist", construct="relation")
        if found.persistence == "t":
            raise self.error(self._loc(node.location), f"{display} is a temporary table and cannot be a TVIEW source",
                             construct="temporary table")
        if found.view_sql is not None:
            view_name = display
            self.helper_views.append(view_name)
            child = Scope(scope, "view", self._loc(node.location), view_name=view_name, inherit_lookup=False)
            self._view_location.append((self._loc(node.location) if not self._view_location else self._view_location[-1][0], view_name))
            depth = 0
            try:
                view_stmt = parse_sql(found.view_sql)[0].stmt
                depth = self._check_depth(view_stmt, MAX_DEPTH - self._depth)
                self._depth += depth
                outputs = self._select(view_stmt, child)
            finally:
                self._depth -= depth
                self._view_location.pop()
            self._add_derived(scope, child, alias, outputs, node.alias, relname=node.relname, schema=node.schemaname)
            return
        if found.relation is None:
            raise self.error(
                self._loc(node.location),
                f"{display} is a {found.kind}; TVIEW sources must be tables (triggers maintain them)",
                hint="read the underlying tables instead" if found.kind == "materialized view" else None,
                construct=found.kind,
            )
        relation: Relation = found.relation
        occ = Occurrence(len(self.occurrences) + 1, relation, alias, self._loc(node.location),
                         via_view=self._view_location[-1][1] if self._view_location else None)
        self.occurrences.append(occ)
        scope.occurrences.append(occ)
        columns = list(relation.columns)
        if node.alias and node.alias.colnames:
            renamed = [c.sval for c in node.alias.colnames]
            columns = renamed + columns[len(renamed):]
            occ.renames = dict(zip(columns, relation.columns))
        scope.items.append(Item(alias, columns, occurrence=occ, relname=node.relname, schema=node.schemaname))

    def _add_derived(self, scope, child, alias, outputs, alias_node, relname=None, schema=None) -> None:
        names = [n for n, _o in outputs]
        if alias_node is not None and alias_node.colnames:
            renamed = [c.sval for c in alias_node.colnames]
            names = renamed + names[len(renamed):]
        item = Item(alias, names, derived=child, relname=relname, schema=schema)
        item.origins = {name: origin for name, (_n, origin) in zip(names, outputs)}
        scope.items.append(item)

    # -- expressions ---------------------------------------------------------------------------------

    def _expr(self, node, scope: Scope, conjunct: bool = False) -> None:
        if node is None:
            return
        if isinstance(node, (list, tuple)):
            for child in node:
                self._expr(child, scope)
            return
        if isinstance(node, ast.ColumnRef):
            self._resolve_read(node, scope)
            return
        if isinstance(node, ast.SubLink):
            self._sublink(node, scope)
            return
        if isinstance(node, ast.BoolExpr):
            and_ = conjunct and node.boolop == BoolExprType.AND_EXPR
            for arg in node.args:
                self._expr(arg, scope, conjunct=and_)
            return
        if isinstance(node, ast.A_Expr):
            if conjunct and self._is_equality(node):
                self._equality(node.lexpr, node.rexpr, scope)
            self._expr(node.lexpr, scope)
            self._expr(node.rexpr, scope)
            return
        if isinstance(node, ast.FuncCall):
            name = node.funcname[-1].sval
            if node.over is not None:
                scope.windows.append(self._loc(node.location))
            elif node.agg_star or node.agg_order or node.agg_distinct or node.agg_filter is not None or self._is_aggregate(name):
                scope.aggregates.append(self._loc(node.location))
        if isinstance(node, ast.SelectStmt):
            self._select(node, Scope(scope, "sublink", None))
            return
        if isinstance(node, ast.Node):
            for attr in node:
                value = getattr(node, attr)
                if isinstance(value, (ast.Node, list, tuple)):
                    self._expr(value, scope)

    def _is_equality(self, node: ast.A_Expr) -> bool:
        if node.kind == A_Expr_Kind.AEXPR_NOT_DISTINCT:
            return True
        return node.kind == A_Expr_Kind.AEXPR_OP and len(node.name) == 1 and node.name[0].sval == "="

    def _equality(self, left, right, scope: Scope) -> None:
        if isinstance(left, ast.RowExpr) and isinstance(right, ast.RowExpr) and len(left.args) == len(right.args):
            for a, b in zip(left.args, right.args):
                self._add_edge(self._origin(a, scope), self._origin(b, scope), scope)
            return
        self._add_edge(self._origin(left, scope), self._origin(right, scope), scope)

    def _sublink(self, node: ast.SubLink, scope: Scope) -> None:
        child = Scope(scope, "sublink", self._loc(node.location))
        outputs = self._select(node.subselect, child)
        if node.testexpr is not None:
            self._expr(node.testexpr, scope)
            if node.subLinkType == SubLinkType.ANY_SUBLINK and outputs and (
                not node.operName or node.operName[-1].sval == "="
            ):
                tests = node.testexpr.args if isinstance(node.testexpr, ast.RowExpr) else [node.testexpr]
                if not child.correlated:
                    # Correlated only through `x IN (SELECT y ...)`: a NULL y turns the result of
                    # every non-matching row from false into NULL, so y must never be NULL.
                    for _name, origin in outputs[: len(tests)]:
                        if origin is not None and not self._never_null(origin, node.subselect):
                            occ, col = origin
                            raise self.error(
                                self._loc(node.location),
                                f"IN (subquery) over the nullable column {occ.relation.display()}.{col}: "
                                "a NULL there changes the result for every row",
                                hint=f"use EXISTS (SELECT 1 FROM ... WHERE {col} = ...), or filter "
                                     f"WHERE {col} IS NOT NULL inside the subquery",
                                construct="IN over nullable column",
                            )
                for test, (_name, origin) in zip(tests, outputs):
                    self._add_edge(self._origin(test, scope), origin)
                # an IN subquery correlates by its test expression even without outer references
                child.correlated = child.correlated or any(
                    self._origin(t, scope) is not None for t in tests
                )

    def _never_null(self, origin: tuple[Occurrence, str], select: ast.SelectStmt) -> bool:
        """The column is NOT NULL in its table, or the subquery filters `col IS NOT NULL`."""
        occ, col = origin
        if occ.relation.columns[col].not_null:
            return True
        conjuncts = [select.whereClause] if select.whereClause is not None else []
        while conjuncts:
            node = conjuncts.pop()
            if isinstance(node, ast.BoolExpr) and node.boolop == BoolExprType.AND_EXPR:
                conjuncts.extend(node.args)
            elif (isinstance(node, ast.NullTest) and node.nulltesttype == NullTestType.IS_NOT_NULL
                  and isinstance(node.arg, ast.ColumnRef) and node.arg.fields[-1].sval == col):
                return True
        return False

    # -- name resolution ---------------------------------------------------------------------------------

    def _find_item(self, qualifier, scope: Scope, location) -> tuple[Item, Scope]:
        parts = [f.sval for f in qualifier]
        alias = parts[-1]
        schema = parts[-2] if len(parts) > 1 else None
        level: Scope | None = scope
        while level is not None:
            for item in level.items:
                if item.alias == alias and (schema is None or item.schema in (schema, None)):
                    return item, level
            level = level.lookup_parent
        raise self.error(self._loc(location), f"missing FROM-clause entry for {'.'.join(parts)}", construct="column")

    def _resolve(self, node: ast.ColumnRef, scope: Scope) -> tuple[Item, str | None, Scope] | None:
        """(item, column or None for a whole-row/star reference, scope it was found in)."""
        fields = node.fields
        if isinstance(fields[-1], ast.A_Star):
            if len(fields) == 1:
                return None
            item, level = self._find_item(fields[:-1], scope, node.location)
            return item, None, level
        if len(fields) == 1:
            name = fields[0].sval
            level: Scope | None = scope
            while level is not None:
                for item in level.items:
                    if name in item.columns:
                        return item, name, level
                for item in level.items:
                    if item.alias == name:  # whole-row reference, e.g. to_jsonb(c)
                        return item, None, level
                level = level.lookup_parent
            return None
        item, level = self._find_item(fields[:-1], scope, node.location)
        return item, fields[-1].sval, level

    def _resolve_read(self, node: ast.ColumnRef, scope: Scope) -> None:
        if len(node.fields) == 1 and isinstance(node.fields[0], ast.A_Star):
            for item in scope.items:
                self._mark_item_read(item, None)
            return
        resolved = self._resolve(node, scope)
        if resolved is None:
            return
        item, column, level = resolved
        self._mark_correlation(scope, level)
        self._mark_item_read(item, column)

    def _mark_correlation(self, scope: Scope, level: Scope) -> None:
        current: Scope | None = scope
        while current is not None and current is not level:
            current.correlated = True
            current = current.parent

    def _mark_item_read(self, item: Item | None, column: str | None) -> None:
        if item is None:
            return
        if item.occurrence is not None:
            occ = item.occurrence
            if column is None:
                occ.columns_read |= set(occ.relation.columns)
            else:
                occ.columns_read.add(occ.renames.get(column, column))
        elif column is None:
            for origin in item.origins.values():
                if origin is not None:
                    origin[0].columns_read.add(origin[1])
        # derived columns: the inner SELECT was walked, its reads are recorded already

    def _item_origin(self, item: Item, column: str) -> tuple[Occurrence, str] | None:
        if item.occurrence is not None:
            occ = item.occurrence
            return occ, occ.renames.get(column, column)
        return item.origins.get(column)

    def _origin(self, node, scope: Scope) -> tuple[Occurrence, str] | None:
        """The base column an expression is, when it is one (through casts and derived tables)."""
        while isinstance(node, ast.TypeCast):
            node = node.arg
        if not isinstance(node, ast.ColumnRef) or isinstance(node.fields[-1], ast.A_Star):
            return None
        resolved = self._resolve(node, scope)
        if resolved is None or resolved[1] is None:
            return None
        return self._item_origin(resolved[0], resolved[1])

    def _add_edge(self, a: tuple[Occurrence, str] | None, b: tuple[Occurrence, str] | None,
                  stated_in: Scope | None = None) -> None:
        if a is None or b is None or a[0] is b[0]:
            return
        if stated_in is not None and stated_in.kind == "top":
            self._top_equalities |= {(a[0].id, a[1], b[0].id, b[1]), (b[0].id, b[1], a[0].id, a[1])}
        for edge in self.edges:
            if edge.a is a[0] and edge.b is b[0]:
                if (a[1], b[1]) not in edge.pairs:
                    edge.pairs.append((a[1], b[1]))
                return
            if edge.a is b[0] and edge.b is a[0]:
                if (b[1], a[1]) not in edge.pairs:
                    edge.pairs.append((b[1], a[1]))
                return
        self.edges.append(Edge(a[0], b[0], [(a[1], b[1])]))

    # -- checks -------------------------------------------------------------------------------------------

    def _check_select_shape(self, stmt: ast.SelectStmt, top: Scope) -> None:
        if top.aggregates and not stmt.groupClause:
            raise self.error(top.aggregates[0], "an aggregate over all rows has no key to maintain",
                             hint=AGGREGATE_HINT, construct="aggregate without GROUP BY")

    def _check_scopes(self, scope: Scope) -> None:
        """Constructs that would make a row depend on other roots' rows, where they span roots."""
        if scope.spans_roots():
            if scope.windows:
                raise self.error(scope.windows[0], "window functions over rows of several roots are not supported",
                                 hint="compute per-root values in a correlated subquery", construct="window function")
            if scope.limits:
                raise self.error(scope.limits[0], "LIMIT/OFFSET over rows of several roots is not supported",
                                 hint="limit children inside a correlated subquery instead", construct="LIMIT/OFFSET")
            if scope.distinct_on:
                raise self.error(scope.distinct_on[0], "DISTINCT ON is not supported outside correlated subqueries",
                                 hint="pick the row per root in a correlated subquery", construct="DISTINCT ON")
        for child in scope.children:
            self._check_scopes(child)

    def _output_columns(self, stmt, top, output) -> tuple[list[OutputColumn], list]:
        targets = list(stmt.targetList or ())
        outputs = []
        for target in targets:
            outputs.extend((name, origin, target.location) for name, origin in self._target_outputs(target, top))
        columns: list[OutputColumn] = []
        seen: dict[str, int | None] = {}
        for index, (name, typ) in enumerate(output):
            location = outputs[index][2] if index < len(outputs) else None
            if name == "?column?":
                raise self.error(location, f"output column {index + 1} has no name",
                                 hint="give it one with AS name", construct="unnamed column")
            if name in SYSTEM_COLUMNS:
                raise self.error(location, f"output column {name!r} has the name of a system column of PostgreSQL tables",
                                 hint="rename it with AS", construct="system column name")
            if name in seen:
                raise self.error(location, f"output column {name!r} appears more than once",
                                 hint="give each output column a distinct name with AS", construct="duplicate column")
            seen[name] = location
            columns.append(OutputColumn(name, typ, location))
        origins = [outputs[i][1] if i < len(outputs) else None for i in range(len(columns))]
        return columns, origins

    def _key_name(self, columns: list[OutputColumn], key: str | None) -> str:
        names = [c.name for c in columns]
        if key is not None:
            if key not in names:
                raise self.error(0, f"key column {key!r} is not an output column of the definition",
                                 hint=f"output columns: {', '.join(names)}", construct="key")
            return key
        for name in names:
            if name.startswith(KEY_PREFIX):
                return name
        raise self.error(0, "no key column: no output column is named pk_<entity>",
                         hint="output the root table's primary key as pk_<entity>, or pass key=<column>",
                         construct="key")

    def _root(self, column: OutputColumn, origin, top: Scope) -> tuple[Occurrence, str]:
        if origin is None:
            raise self.error(column.location, f"the key {column.name!r} must be a plain column of the root table",
                             hint="select the root table's primary key column itself, without expressions",
                             construct="key")
        occ, col = origin
        if occ not in self._top_level_occurrences(top):
            raise self.error(column.location, f"the key {column.name!r} must come from a table in the top-level FROM",
                             construct="key")
        if occ.id in self._nullable:
            raise self.error(
                column.location,
                f"the key {column.name!r} comes from {occ.label()}, which is on the nullable side of an outer join: "
                "rows without a root row would have a NULL key",
                hint=f"make {occ.label()} the preserved side (FROM root LEFT JOIN other), or join it with an inner join",
                construct="key")
        relation = occ.relation
        if not any(cols == (col,) for cols in relation.unique_not_null):
            raise self.error(
                column.location,
                f"the key {column.name!r} is {relation.display()}.{col}, which is not a unique, not-null column",
                hint=f"use {relation.display()}'s primary key as the key (the root must be 1:1 with TVIEW rows)",
                construct="key",
            )
        return occ, col

    def _top_level_occurrences(self, top: Scope) -> list[Occurrence]:
        found = list(top.occurrences)
        for child in top.children:
            if child.kind in ("derived", "view", "cte"):
                found.extend(self._top_level_occurrences(child))
        return found

    def _lineages(self, root: Occurrence, root_key: str, top: Scope) -> list[Lineage]:
        previous: dict[int, tuple[Occurrence, Edge] | None] = {root.id: None}
        queue = deque([root])
        while queue:
            here = queue.popleft()
            for edge in self.edges:
                if edge.a is here or edge.b is here:
                    there = edge.other(here)
                    if there.id not in previous:
                        previous[there.id] = (here, edge)
                        queue.append(there)
        lineages = []
        for occ in self.occurrences:
            if occ.id not in previous:
                raise self._unconnected(occ, root, top)
            hops: list[Hop] = []
            node = occ
            while previous[node.id] is not None:
                towards, edge = previous[node.id]  # type: ignore[misc]
                hops.append(Hop(node, towards, edge.columns_at(node)))
                node = towards
            direct = bool(hops) and any(dst == root_key for _src, dst in hops[-1].pairs)
            lineages.append(Lineage(occ, hops, direct))
        return lineages

    def _unconnected(self, occ: Occurrence, root: Occurrence, top: Scope):
        scope = self._scope_of(occ, top)
        sublink = scope
        while sublink is not None and sublink.kind != "sublink":
            sublink = sublink.parent
        if sublink is not None and not sublink.correlated:
            what = "uncorrelated aggregate subquery" if sublink.aggregates else "uncorrelated subquery"
            return self.error(sublink.location, f"{what} over {occ.relation.display()}: a change to it would affect every row",
                              hint="correlate it with the root by equality (WHERE child.fk = root.pk), "
                                   "or maintain the value in its own table",
                              construct=what)
        return self.error(
            occ.location,
            f"no equality join path between {occ.label()} and the root {root.label()}: only equality joins and "
            "equality correlations can be maintained incrementally",
            hint="join with = on columns (e.g. ON child.fk = parent.pk); non-equi conditions may stay as extra filters",
            construct="non-equi join",
        )

    def _scope_of(self, occ: Occurrence, scope: Scope) -> Scope | None:
        if occ in scope.occurrences:
            return scope
        for child in scope.children:
            found = self._scope_of(occ, child)
            if found is not None:
                return found
        return None

    def _check_multiplicity(self, stmt, top: Scope, root: Occurrence) -> None:
        """A join in the top-level FROM must not multiply root rows (unless grouped by the key)."""
        if stmt.groupClause or top.distinct:
            return
        top_occ = set(top.occurrences)
        # tables of derived tables and helper views in the top-level FROM, when joined there
        nested = set(self._top_level_occurrences(top)) - top_occ
        for item in top.items:
            occ = item.occurrence
            if occ is None or occ is root:
                continue
            joined = set()
            for edge in self.edges:
                if (edge.a is occ and edge.b in top_occ) or (edge.b is occ and edge.a in top_occ):
                    joined |= {mine for mine, _other in edge.columns_at(occ)}
                elif occ in (edge.a, edge.b) and edge.other(occ) in nested:
                    other = edge.other(occ)
                    joined |= {mine for mine, theirs in edge.columns_at(occ)
                               if (occ.id, mine, other.id, theirs) in self._top_equalities}
            unique = [cols for cols in [occ.relation.primary_key, *occ.relation.unique_not_null] if cols]
            if not any(set(cols) <= joined for cols in unique):
                raise self.error(
                    occ.location,
                    f"joining {occ.label()} can repeat a root row (it is not joined on a unique key), "
                    "so the key would not be unique",
                    hint=AGGREGATE_HINT + ", or GROUP BY the key",
                    construct="row-multiplying join",
                )

    def _check_volatility(self) -> None:
        """Volatile functions make a row differ between refreshes, and so do the functions returning
        the time of the transaction (now(), CURRENT_DATE, ...): reject them.

        PostgreSQL resolves which functions the definition really calls (overloads, operators,
        built-ins): a temporary view stores its rewritten query tree, whose function references
        are read back from pg_rewrite (dependencies on built-in functions are not recorded)."""
        try:
            with self.conn.transaction(force_rollback=True):
                self.conn.execute(f"CREATE TEMPORARY VIEW pg_tviews_volatility_probe AS {self.sql}")
                rows = self.conn.execute(
                    "SELECT DISTINCT p.proname, p.provolatile = 'v' FROM pg_catalog.pg_rewrite r,"
                    " regexp_matches(r.ev_action::text, ':(?:funcid|opfuncid|aggfnoid|winfnoid) (\\d+)', 'g') m"
                    " JOIN pg_catalog.pg_proc p ON p.oid = m[1]::oid"
                    " WHERE r.ev_class = 'pg_tviews_volatility_probe'::regclass"
                    "   AND (p.provolatile = 'v' OR p.oid IN ('pg_catalog.now()'::regprocedure,"
                    "        'pg_catalog.transaction_timestamp()'::regprocedure,"
                    "        'pg_catalog.statement_timestamp()'::regprocedure))"
                    " ORDER BY 2 DESC, 1"
                ).fetchall()
                # CURRENT_DATE, CURRENT_TIME[STAMP], LOCALTIME[STAMP] are SQLValueFunction nodes
                rows += [(TIME_KEYWORDS[int(op)], False) for (op,) in self.conn.execute(
                    "SELECT DISTINCT m[1] FROM pg_catalog.pg_rewrite r,"
                    " regexp_matches(r.ev_action::text, '\\{SQLVALUEFUNCTION :op ([0-8]) ', 'g') m"
                    " WHERE r.ev_class = 'pg_tviews_volatility_probe'::regclass ORDER BY 1"
                ).fetchall()]
        except psycopg.errors.Error as exc:
            raise self.error(0, f"PostgreSQL rejects the definition as a view: {exc.diag.message_primary}",
                             construct="sql") from None
        if not rows:
            return
        name, volatile = rows[0]
        if volatile:
            raise self.error(self._function_location(name), f"volatile function {name}() is not allowed",
                             hint="a TVIEW row must be the same whenever it is recomputed; use a stable value, "
                                  "or store it in a source table",
                             construct="volatile function")
        keyword = name.isupper()
        raise self.error(self._keyword_location((name,)) if keyword else self._function_location(name),
                         f"{name}{'' if keyword else '()'} is the time of the transaction computing the row, "
                         "which differs at every refresh",
                         hint="a TVIEW row must be the same whenever it is recomputed: store the time in a source "
                              "table (a column with DEFAULT now()) and read that",
                         construct="time-dependent function")

    def _check_comparable(self, columns: list[OutputColumn]) -> None:
        """Maintenance compares values to write only what changed: old and new images of the source
        columns it reads (UPDATE gates) and current and fresh TVIEW rows (the refresh). Types without
        a btree or hash equality (json, xml, point, ...) make those comparisons fail at the first
        write, or miss changes (box and circle compare by area)."""
        read = {(occ, name): occ.relation.columns[name].type
                for occ in self.occurrences for name in sorted(occ.columns_read) if name in occ.relation.columns}
        types = sorted({c.type for c in columns} | set(read.values()))
        lacking = dict(self.conn.execute(EQUALITY_LACKING_SQL, (types,)).fetchall())

        def incomparable(typ: str) -> str:
            part = "" if lacking[typ] == typ else f" (through its {lacking[typ]} part)"
            return f"type {typ}{part}, which has no equality operator"

        for column in columns:
            if column.type in lacking:
                raise self.error(
                    column.location, f"output column {column.name!r} has {incomparable(column.type)}",
                    hint="build JSON with the jsonb functions (jsonb_build_object, jsonb_agg, to_jsonb), "
                         "or cast the value to a comparable type (::jsonb, ::text)",
                    construct="type without equality")
        for (occ, name), typ in read.items():
            if typ in lacking:
                raise self.error(
                    occ.location, f"column {occ.relation.display()}.{name} has {incomparable(typ)}: a TVIEW "
                    "cannot read it",
                    hint="change the column to a comparable type (jsonb instead of json), or do not read it",
                    construct="type without equality")

    # -- small helpers --------------------------------------------------------------------------------

    def _is_aggregate(self, name: str) -> bool:
        if name not in self._aggregate_cache:
            self._aggregate_cache[name] = self.conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_proc WHERE proname = %s AND prokind = 'a')", (name,)
            ).fetchone()[0]
        return self._aggregate_cache[name]

    def _tokens(self):
        try:
            return [(char_offset(self.sql, t.start), t.name) for t in scan(self.sql)]
        except Exception:  # scanning only improves positions; never fail because of it
            return []

    def _keyword_location(self, names: tuple[str, ...], depth: int | None = None) -> int | None:
        """First token among `names`, at parenthesis depth `depth` when given."""
        level = 0
        for offset, name in self._tokens():
            if name == "ASCII_40":
                level += 1
            elif name == "ASCII_41":
                level -= 1
            elif name in names and (depth is None or level == depth):
                return offset
        return None

    def _setop_location(self, stmt) -> int | None:
        return None if self._view_location else self._keyword_location(("UNION", "INTERSECT", "EXCEPT"))

    def _function_location(self, name: str) -> int | None:
        lowered = name.lower()
        for offset, _token in self._tokens():
            if self.sql[offset:offset + len(lowered)].lower() == lowered and self.sql[offset + len(lowered):].lstrip().startswith("("):
                return offset
        return None

    def _join_location(self, node: ast.JoinExpr) -> int | None:
        return self._keyword_location(("NATURAL",))

    def _first_location(self, node) -> int | None:
        if isinstance(node, (list, tuple)):
            return next((loc for loc in map(self._first_location, node) if loc is not None), None)
        if not isinstance(node, ast.Node):
            return None
        location = getattr(node, "location", None)
        if isinstance(location, int) and location >= 0:
            return location
        return next((loc for loc in (self._first_location(getattr(node, attr)) for attr in node) if loc is not None),
                    None)


def analyze(conn: psycopg.Connection, sql: str, *, key: str | None = None, name: str | None = None) -> Definition:
    """Validate a TVIEW definition and derive its lineage graph; raises DefinitionError."""
    return Analyzer(conn, sql, name=name).analyze(key)
