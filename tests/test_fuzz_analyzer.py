"""Fuzzing the definition analyzer and TVIEW creation with generated SELECT statements.

SELECTs are drawn from a grammar over a small schema (joins of every kind, derived tables, CTEs,
views, correlated and uncorrelated subqueries, aggregates, window functions, set operations,
DISTINCT, LIMIT, volatile functions), then some are mutated token by token, and some are plain
garbage. Whatever the input, analysis and creation either succeed or raise DefinitionError; a
rejected creation leaves no object behind, and a created TVIEW equals its definition, follows
writes, and its drop removes everything its creation made.

Hypothesis prints the failing statement; the run is bounded (a few hundred examples).
"""

from __future__ import annotations

import os
import string

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from oracle import assert_exact
from pg_tviews import engine
from pg_tviews.definition import analyze
from pg_tviews.errors import DefinitionError

SCHEMA = """
CREATE TABLE tb_org (pk_org bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE tb_user (pk_user bigint PRIMARY KEY, fk_org bigint REFERENCES tb_org, name text NOT NULL,
                      email text UNIQUE, score int);
CREATE TABLE tb_post (pk_post bigint PRIMARY KEY, fk_user bigint NOT NULL REFERENCES tb_user, title text,
                      views int NOT NULL DEFAULT 0);
CREATE TABLE tb_comment (pk_comment bigint PRIMARY KEY, fk_post bigint NOT NULL REFERENCES tb_post,
                         fk_user bigint REFERENCES tb_user, body text);
CREATE TABLE tb_tag (pk_tag int PRIMARY KEY, label text NOT NULL UNIQUE);
CREATE TABLE tb_post_tag (fk_post bigint NOT NULL REFERENCES tb_post, fk_tag int NOT NULL REFERENCES tb_tag,
                          PRIMARY KEY (fk_post, fk_tag));
CREATE INDEX ON tb_user (fk_org);
CREATE INDEX ON tb_post (fk_user);
CREATE INDEX ON tb_comment (fk_post);
CREATE INDEX ON tb_comment (fk_user);
CREATE INDEX ON tb_post_tag (fk_tag);
CREATE VIEW v_user AS SELECT u.pk_user, u.name, o.name AS org FROM tb_user u LEFT JOIN tb_org o ON o.pk_org = u.fk_org;
CREATE MATERIALIZED VIEW mv_post AS SELECT * FROM tb_post;
INSERT INTO tb_org VALUES (1, 'acme'), (2, 'initech');
INSERT INTO tb_user VALUES (1, 1, 'ada', 'ada@x', 3), (2, 1, 'bob', NULL, NULL), (3, NULL, 'cy', 'cy@x', 1);
INSERT INTO tb_post VALUES (10, 1, 'hello', 5), (11, 1, NULL, 0), (12, 2, 'bob here', 2);
INSERT INTO tb_comment VALUES (100, 10, 2, 'nice'), (101, 10, NULL, 'meh'), (102, 12, 1, NULL);
INSERT INTO tb_tag VALUES (1, 'sql'), (2, 'news');
INSERT INTO tb_post_tag VALUES (10, 1), (10, 2), (12, 1);
"""

# one statement per table, run inside a rolled-back transaction after a successful creation
WRITES = [
    "INSERT INTO tb_org VALUES (3, 'umbrella')",
    "UPDATE tb_org SET name = name || '!' WHERE pk_org = 1",
    "INSERT INTO tb_user VALUES (4, 3, 'dee', 'dee@x', 7)",
    "UPDATE tb_user SET name = 'ADA', score = coalesce(score, 0) + 1, fk_org = 2 WHERE pk_user = 1",
    "INSERT INTO tb_post VALUES (13, 4, 'new', 1)",
    "UPDATE tb_post SET title = 'moved', fk_user = 3, views = views + 1 WHERE pk_post = 12",
    "INSERT INTO tb_comment VALUES (103, 13, 4, 'first'), (104, 10, 3, 'second')",
    "UPDATE tb_comment SET fk_post = 11, body = 'moved' WHERE pk_comment = 100",
    "INSERT INTO tb_post_tag VALUES (13, 2)",
    "DELETE FROM tb_post_tag WHERE fk_post = 10 AND fk_tag = 2",
    "UPDATE tb_tag SET label = 'postgres' WHERE pk_tag = 1",
    "DELETE FROM tb_comment WHERE pk_comment = 101",
    "DELETE FROM tb_comment WHERE fk_post = 11",
    "DELETE FROM tb_post WHERE pk_post = 11",
]

#: table -> (key column, other columns, {foreign key column: parent table})
TABLES: dict[str, tuple[str | None, list[str], dict[str, str]]] = {
    "tb_org": ("pk_org", ["name"], {}),
    "tb_user": ("pk_user", ["name", "email", "score"], {"fk_org": "tb_org"}),
    "tb_post": ("pk_post", ["title", "views"], {"fk_user": "tb_user"}),
    "tb_comment": ("pk_comment", ["body"], {"fk_post": "tb_post", "fk_user": "tb_user"}),
    "tb_tag": ("pk_tag", ["label"], {}),
    "tb_post_tag": (None, [], {"fk_post": "tb_post", "fk_tag": "tb_tag"}),
}
ROOTS = [t for t, (key, _c, _f) in TABLES.items() if key is not None]


def children_of(table: str) -> list[tuple[str, str]]:
    """(child table, its foreign key column) for every table referencing `table`."""
    return [(child, fk) for child, (_k, _c, fks) in TABLES.items() for fk, parent in fks.items() if parent == table]


def columns_of(table: str) -> list[str]:
    key, others, fks = TABLES[table]
    return ([key] if key else []) + others + list(fks)


class Aliases:
    """Fresh, distinct table aliases within one generated statement."""

    def __init__(self) -> None:
        self.count = 0

    def new(self, table: str) -> str:
        self.count += 1
        return f"{table[3]}{self.count}"


# -- the grammar ------------------------------------------------------------------------------------

TEXT_LITERALS = ["'x'", "''", "'it''s'", "'back\\slash'", "'ünïcødé ✓'", "'--not a comment'", "'/*'",
                 "E'tab\\t'", "$$dollar$$", "$q$);DROP TABLE tb_user;--$q$", "U&'\\0041'"]


@st.composite
def scalar(draw, visible: list[tuple[str, str]], aliases: Aliases, depth: int, grouped: bool = False) -> str:
    """A scalar expression over the columns of `visible` (alias, table) items; aggregates only
    when the statement groups (`grouped`)."""
    if depth >= 3 or not visible:
        choices = ["column", "literal"]
    else:
        choices = ["column"] * 4 + ["literal", "function", "case", "arith", "cast", "json", "json"]
    if depth < 2 and visible:
        choices += ["correlated"] * 10 + ["exists"] * 3 + ["in", "window", "uncorrelated"]
        choices += ["aggregate"] * 3 if grouped else []
    kind = draw(st.sampled_from(choices))
    if kind == "column":
        if not visible:
            return draw(st.sampled_from(["1", "NULL", "'c'"]))
        alias, table = draw(st.sampled_from(visible))
        return f"{alias}.{draw(st.sampled_from(columns_of(table)))}"
    if kind == "literal":
        return draw(st.sampled_from(["1", "-7", "NULL", "true", "2.5", "'{}'::jsonb", "now()", "'(1,2)'::point",
                                     "'{}'::json", "NULL::xml", "ROW(1, 'a')", "'1.50'::numeric", *TEXT_LITERALS]))
    inner = lambda: draw(scalar(visible, aliases, depth + 1, grouped))  # noqa: E731
    if kind == "function":
        fn = draw(st.sampled_from(["lower", "upper", "length", "md5", "coalesce", "coalesce", "nullif", "abs",
                                   "random", "clock_timestamp", "gen_random_uuid", "json_build_object", "divide",
                                   "to_json", "int"]))
        if fn in ("random", "clock_timestamp", "gen_random_uuid"):
            return f"{fn}()"
        if fn == "json_build_object":
            return f"json_build_object('k', {inner()})"
        if fn == "divide":
            return f"(100 / (length({inner()}::text) - 4))"
        if fn == "int":
            return f"({inner()}::text)::int"
        if fn in ("coalesce", "nullif"):
            return f"{fn}({inner()}::text, 'none')"
        if fn == "abs":
            return f"abs(length({inner()}::text))"
        return f"{fn}({inner()}::text)"
    if kind == "case":
        return f"CASE WHEN {inner()} IS NULL THEN {inner()}::text ELSE 'set' END"
    if kind == "arith":
        op = draw(st.sampled_from(["||", "+", "=", "<", "AND", "IS DISTINCT FROM"]))
        if op == "||":
            return f"({inner()}::text || {inner()}::text)"
        if op == "+":
            return f"(length({inner()}::text) + 1)"
        if op == "AND":
            return f"({inner()} IS NULL AND {inner()} IS NOT NULL)"
        return f"({inner()}::text {op} {inner()}::text)"
    if kind == "cast":
        return f"{inner()}::{draw(st.sampled_from(['text', 'varchar(3)', 'name']))}"
    if kind == "json":
        pairs = ", ".join(f"'k{i}', {inner()}" for i in range(draw(st.integers(0, 3))))
        return f"jsonb_build_object({pairs})"
    if kind == "window":
        alias, table = draw(st.sampled_from(visible))
        fn = draw(st.sampled_from(["row_number()", "rank()", "count(*)"]))
        return f"{fn} OVER (PARTITION BY {alias}.{columns_of(table)[0]})"
    if kind == "aggregate":
        alias, table = draw(st.sampled_from(visible))
        column = draw(st.sampled_from(columns_of(table)))
        return draw(st.sampled_from(["count(*)", f"count({alias}.{column})", f"max({alias}.{column}::text)",
                                     f"jsonb_agg({alias}.{column} ORDER BY {alias}.{column})",
                                     f"string_agg({alias}.{column}::text, ',' ORDER BY {alias}.{column})",
                                     f"count(*) FILTER (WHERE {alias}.{column} IS NOT NULL)"]))
    alias, table = draw(st.sampled_from(visible))
    children = children_of(table)
    if kind in ("correlated", "exists", "in") and children:
        child, fk = draw(st.sampled_from(children))
        c = aliases.new(child)
        key = TABLES[table][0] or columns_of(table)[0]
        where = f"{c}.{fk} = {alias}.{key}"
        if draw(st.integers(0, 3)) == 0:
            where = draw(st.sampled_from([f"{c}.{fk} > {alias}.{key}", f"{where} AND {c}.{fk} IS NOT NULL",
                                          f"{where} OR {c}.{fk} IS NULL",
                                          f"{c}.{fk} IS NOT DISTINCT FROM {alias}.{key}",
                                          f"{c}.{fk} IN (SELECT {alias}.{key})"]))
        if kind == "exists":
            return f"EXISTS (SELECT 1 FROM {child} {c} WHERE {where})"
        if kind == "in":
            return f"{alias}.{key} IN (SELECT {c}.{fk} FROM {child} {c})"
        body = draw(scalar([(c, child)], aliases, depth + 1))
        first = columns_of(child)[0]
        shape = draw(st.sampled_from(["agg", "agg", "agg", "limit", "derived", "grandchild"]))
        if shape == "limit":
            return f"(SELECT {body} FROM {child} {c} WHERE {where} ORDER BY {c}.{first} DESC LIMIT 1)"
        agg = draw(st.sampled_from([f"jsonb_agg({body} ORDER BY {c}.{first})", "count(*)",
                                    f"coalesce(max({body}::text), '')", f"array_agg({c}.{first})"]))
        subquery = f"SELECT {agg} FROM {child} {c} WHERE {where}"
        if shape == "derived":
            subquery = f"SELECT x.* FROM ({subquery}) x"
        elif shape == "grandchild" and children_of(child):
            grandchild, gfk = draw(st.sampled_from(children_of(child)))
            g = aliases.new(grandchild)
            join = draw(st.sampled_from(["JOIN", "LEFT JOIN"]))
            subquery = (f"SELECT jsonb_agg(jsonb_build_object('a', {body}, 'b', {g}.{columns_of(grandchild)[0]}))"
                        f" FROM {child} {c} {join} {grandchild} {g} ON {g}.{gfk} = {c}.{first} WHERE {where}")
        return f"({subquery})"
    other = draw(st.sampled_from(ROOTS))
    o = aliases.new(other)
    return f"(SELECT count(*) FROM {other} {o})"


@st.composite
def from_clause(draw, aliases: Aliases) -> tuple[str, list[tuple[str, str]], str, str]:
    """FROM items: (sql, visible items, root alias, root table)."""
    root = draw(st.sampled_from(ROOTS))
    r = aliases.new(root)
    source = draw(st.sampled_from(["table"] * 6 + ["derived", "view", "only", "cte"]))
    if source == "derived":
        sql = f"(SELECT * FROM {root}) {r}"
    elif source == "view" and root == "tb_user":
        sql = f"v_user {r}"
    elif source == "only":
        sql = f"ONLY {root} {r}"
    elif source == "cte":
        sql = f"(WITH w AS (SELECT * FROM {root}) SELECT * FROM w) {r}"
    else:
        sql = f"{root} {r}"
    visible = [(r, root)]
    for _ in range(draw(st.integers(0, 2))):
        alias, table = draw(st.sampled_from(visible))
        kind = draw(st.sampled_from(["parent"] * 12 + ["derived"] * 3 + ["child", "cross", "nonequi", "using",
                                                                         "lateral", "function", "mview"]))
        join = draw(st.sampled_from(["JOIN", "LEFT JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"]))
        fks = TABLES[table][2]
        key = TABLES[table][0] or columns_of(table)[0]
        if kind == "parent" and fks:
            fk, parent = draw(st.sampled_from(sorted(fks.items())))
            p = aliases.new(parent)
            sql += f" {join} {parent} {p} ON {p}.{TABLES[parent][0]} = {alias}.{fk}"
            visible.append((p, parent))
        elif kind == "child" and children_of(table):
            child, fk = draw(st.sampled_from(children_of(table)))
            c = aliases.new(child)
            sql += f" {join} {child} {c} ON {c}.{fk} = {alias}.{key}"
            visible.append((c, child))
        elif kind == "cross":
            other = draw(st.sampled_from(ROOTS))
            o = aliases.new(other)
            sql += f" CROSS JOIN {other} {o}"
            visible.append((o, other))
        elif kind == "nonequi" and fks:
            fk, parent = draw(st.sampled_from(sorted(fks.items())))
            p = aliases.new(parent)
            sql += f" {join} {parent} {p} ON {p}.{TABLES[parent][0]} < {alias}.{fk}"
            visible.append((p, parent))
        elif kind == "using" and "fk_user" in fks:
            u = aliases.new("tb_user")
            sql += f" {join} (SELECT pk_user AS fk_user, name AS user_name FROM tb_user) {u} USING (fk_user)"
        elif kind in ("derived", "lateral") and children_of(table):
            child, fk = draw(st.sampled_from(children_of(table)))
            d = aliases.new(child)
            if kind == "derived":
                sql += (f" LEFT JOIN (SELECT {fk}, count(*) AS n FROM {child} GROUP BY {fk}) {d}"
                        f" ON {d}.{fk} = {alias}.{key}")
            else:
                sql += (f" LEFT JOIN LATERAL (SELECT count(*) AS n FROM {child} x WHERE x.{fk} = {alias}.{key})"
                        f" {d} ON true")
        elif kind == "function":
            sql += f" CROSS JOIN generate_series(1, 2) g{aliases.new(table)}"
        elif kind == "mview":
            m = aliases.new("mv_post")
            sql += f" LEFT JOIN mv_post {m} ON {m}.pk_post = {alias}.{key}"
    return sql, visible, r, root


@st.composite
def select_statement(draw, aliases: Aliases | None = None) -> str:
    aliases = aliases or Aliases()
    from_sql, visible, r, root = draw(from_clause(aliases))
    key = TABLES[root][0]
    other = columns_of(root)[1]
    key_item = draw(st.sampled_from([f"{r}.{key}"] * 8 + [f"{r}.{key} AS pk_x", f"{r}.{key} + 0 AS {key}",
                                                        f"{r}.{other} AS pk_y", f"{r}.*", f"{r}.{key}::bigint"]))
    grouped = draw(st.integers(0, 4)) == 0
    items = [key_item]
    for index in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from([f"c{index}"] * 12 + ["xmin", f'"weird ""{index}"" ✓"', "ctid", "data"]))
        items.append(f"{draw(scalar(visible, aliases, 0, grouped))} AS {name}")
    if draw(st.integers(0, 19)) == 0:
        items.append(draw(scalar(visible, aliases, 0, grouped)))  # unnamed
    distinct = draw(st.sampled_from([""] * 12 + ["DISTINCT ", f"DISTINCT ON ({r}.{key}) "]))
    sql = f"SELECT {distinct}{', '.join(items)}\n  FROM {from_sql}"
    if draw(st.integers(0, 2)) == 0:
        sql += f"\n WHERE {draw(scalar(visible, aliases, 1))} IS NOT NULL"
    if grouped:
        group = draw(st.sampled_from([f"{r}.{key}"] * 4 + [f"{r}.{other}", "1", f"{r}.{key}, {r}.{other}"]))
        sql += f"\n GROUP BY {group}"
        if draw(st.booleans()):
            sql += "\n HAVING count(*) > 0"
    if draw(st.integers(0, 4)) == 0:
        sql += f"\n ORDER BY {r}.{key}"
    if draw(st.integers(0, 11)) == 0:
        sql += draw(st.sampled_from([" LIMIT 5", " OFFSET 1", " FOR UPDATE", " LIMIT ALL", " FETCH FIRST 1 ROW ONLY"]))
    if draw(st.integers(0, 14)) == 0:
        op = draw(st.sampled_from(["UNION", "UNION ALL", "INTERSECT", "EXCEPT"]))
        sql = f"({sql})\n{op}\n({sql})"
    wrap = draw(st.integers(0, 15))
    if wrap == 0:
        sql = f"WITH w AS (\n{sql}\n) SELECT * FROM w"
    elif wrap == 1:
        sql = f"WITH RECURSIVE w AS (\n{sql}\n) SELECT * FROM w"
    elif wrap == 2:
        sql = f"SELECT * FROM (\n{sql}\n) s"
    return sql


VOCABULARY = ["SELECT", "FROM", "WHERE", "JOIN", "ON", "(", ")", ",", ";", "'", '"', "$$", "--", "/*", "*/",
              "\\", "::", "AS", "UNION", "NULL", "*", "=", "DROP TABLE tb_user", "pg_sleep(10)", "E'\\''",
              "LATERAL", "WITH", "VALUES (1)", "ORDER BY", "GROUP BY", "\n", "\x00", "\u00a0", "😀", "ß",
              "pk_user", "tb_user", "u1", "$1", "?", "%s", "{", "[1]", "->>", "OVER ()", "FILTER (WHERE true)"]


@st.composite
def mutated(draw) -> str:
    """A generated statement with a few token-level edits: insertions, deletions, duplications."""
    words = draw(select_statement()).split(" ")
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(words)))
        action = draw(st.sampled_from(["insert", "delete", "duplicate", "truncate"]))
        if action == "insert":
            words.insert(index, draw(st.sampled_from(VOCABULARY)))
        elif action == "delete" and words:
            del words[min(index, len(words) - 1)]
        elif action == "duplicate" and words:
            words.insert(index, words[min(index, len(words) - 1)])
        elif action == "truncate" and index:
            words = words[:index]
    return " ".join(words)


garbage = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=string.printable, max_size=300),
    st.lists(st.sampled_from(VOCABULARY), max_size=40).map(" ".join),
    st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
)

definitions = st.one_of(select_statement(), select_statement(), mutated(), garbage)


# -- helpers --------------------------------------------------------------------------------------------


def snapshot(conn: psycopg.Connection) -> dict[str, set]:
    """Every user-visible object by name: relations, functions, triggers, types, TVIEW catalog rows."""
    user_ns = "n.nspname NOT IN ('pg_catalog', 'information_schema')"
    return {
        "relations": set(conn.execute(
            f"SELECT c.relname, n.nspname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            f" WHERE {user_ns}").fetchall()),
        "functions": set(conn.execute(
            f"SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            f" WHERE {user_ns}").fetchall()),
        "triggers": set(conn.execute(
            "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal").fetchall()),
        "types": set(conn.execute(
            f"SELECT t.typname, n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
            f" WHERE {user_ns}").fetchall()),
        "entities": set(conn.execute("SELECT schema_name, table_name, definition FROM tviews.entity").fetchall()),
        "sources": set(conn.execute("SELECT entity_id, schema_name, table_name FROM tviews.entity_source").fetchall()),
    }


def write(conn: psycopg.Connection, tview: engine.TView, statement: str) -> bool:
    """Run one write (in a savepoint). TVIEW maintenance may make it fail only where the definition
    itself fails on the rows written (a division by zero, a subquery returning several rows): like
    a view, a TVIEW cannot hold rows its definition cannot compute. Returns whether it succeeded."""
    try:
        with conn.transaction():
            conn.execute(statement)
        return True
    except psycopg.Error as error:
        if f"tviews.tv{tview.id}_" not in (error.diag.context or ""):
            raise
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL session_replication_role = replica")  # the same write without triggers
        conn.execute(statement)
        conn.execute("SET LOCAL session_replication_role = origin")
        with pytest.raises(psycopg.Error):
            conn.execute(f"SELECT count(*) FROM ({tview.definition}) d")
    return False


def assert_idle(conn: psycopg.Connection) -> None:
    """The connection is usable and outside any transaction (nothing was left open or aborted)."""
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.fixture
def fuzzconn(tvconn):
    tvconn.execute(SCHEMA)
    return tvconn


#: PG_TVIEWS_FUZZ_EXAMPLES=5000 runs a longer search than the bounded default
EXAMPLES = int(os.environ.get("PG_TVIEWS_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# -- properties -----------------------------------------------------------------------------------------


@FUZZ
@given(sql=definitions)
def test_analyze_accepts_or_rejects_with_a_definition_error(pg, fuzzconn, sql):
    try:
        analyze(fuzzconn, sql)
        event("accepted")
    except DefinitionError as error:
        assert error.message and str(error)
        event(f"rejected: {error.construct}")
    assert_idle(fuzzconn)


@FUZZ
@given(sql=st.one_of(select_statement(), select_statement(), select_statement(), mutated()))
def test_create_is_all_or_nothing_and_exact(pg, fuzzconn, sql):
    before = snapshot(fuzzconn)
    try:
        tview = engine.create(fuzzconn, "tv_fuzz", sql)
    except DefinitionError as error:
        event(f"rejected: {error.construct}")
        assert_idle(fuzzconn)
        assert snapshot(fuzzconn) == before, "a rejected definition left objects behind"
        return
    event("created")
    try:
        assert_exact(fuzzconn, tview.name, context="after creation")
        with fuzzconn.transaction(force_rollback=True):
            for statement in WRITES:
                if write(fuzzconn, tview, statement):
                    assert_exact(fuzzconn, tview.name, context=f"after {statement!r}")
                else:
                    event("a write failed where the definition fails")
    finally:
        engine.drop(fuzzconn, tview.name)
    assert_idle(fuzzconn)
    assert snapshot(fuzzconn) == before, "drop did not remove everything creation made"


# -- very long and deeply nested inputs ------------------------------------------------------------------------


def operators(n: int) -> str:
    return "SELECT u.pk_user, " + " + ".join(["u.score"] * n) + " AS total FROM tb_user u"


def subqueries(n: int) -> str:
    innermost = "SELECT max(p.views) FROM tb_post p WHERE p.fk_user = u.pk_user"
    return "SELECT u.pk_user, " + "(SELECT " * n + f"({innermost})" + ")" * n + " AS deep FROM tb_user u"


def columns(n: int) -> str:
    return "SELECT u.pk_user, " + ", ".join(f"u.name || '{i}' AS c{i}" for i in range(n)) + " FROM tb_user u"


# (what, definition, construct of the rejection or None when accepted)
EXTREMES = [
    ("a chain of 390 operators", lambda: operators(390), None),
    ("a chain of 500 operators", lambda: operators(500), "nesting depth"),
    ("a chain of 30,000 operators (pglast's parser would crash the process)", lambda: operators(30_000),
     "definition size"),
    ("80 nested subqueries", lambda: subqueries(80), None),
    ("150 nested subqueries", lambda: subqueries(150), "nesting depth"),
    ("6,000 nested parentheses", lambda: "SELECT u.pk_user, " + "(" * 6_000 + "u.score" + ")" * 6_000
     + " AS x FROM tb_user u", None),
    ("3,000 nested arrays", lambda: "SELECT u.pk_user, " + "ARRAY[" * 3_000 + "1" + "]" * 3_000
     + " AS x FROM tb_user u", "nesting depth"),
    ("5,000 nested arrays (deeper than PostgreSQL's parser stack)", lambda: "SELECT u.pk_user, " + "ARRAY[" * 5_000
     + "1" + "]" * 5_000 + " AS x FROM tb_user u", "syntax"),
    ("1,000 output columns", lambda: columns(1000), None),
    ("a 2 MB string literal", lambda: f"SELECT u.pk_user, '{'x' * 2_000_000}' AS big FROM tb_user u", None),
    ("a 1 MB comment", lambda: f"/* {'-' * 1_000_000} */ SELECT u.pk_user FROM tb_user u", None),
    ("jsonb_build_object with 50 pairs", lambda: "SELECT u.pk_user, jsonb_build_object("
     + ", ".join(f"'k{i}', u.name" for i in range(50)) + ") AS data FROM tb_user u", None),
    ("a NUL character", lambda: "SELECT u.pk_user FROM tb_user u\x00; DROP TABLE tb_user", "NUL character"),
    ("a lone surrogate", lambda: "SELECT u.pk_user, '\udcff' AS x FROM tb_user u", "encoding"),
    ("a JSON column", lambda: "SELECT u.pk_user, json_build_object('n', u.name) AS data FROM tb_user u",
     "type without equality"),
    ("an output column named like a system column", lambda: "SELECT u.pk_user, u.name AS xmin FROM tb_user u",
     "system column name"),
    ("an aliased join", lambda: "SELECT j.pk_post FROM (tb_post p JOIN tb_user u ON u.pk_user = p.fk_user) j",
     "aliased join"),
    ("VALUES", lambda: "VALUES (1)", "VALUES"),
]


@pytest.mark.parametrize("what, definition, construct", EXTREMES, ids=[e[0] for e in EXTREMES])
def test_extreme_definitions(pg, fuzzconn, what, definition, construct):
    text = definition()
    before = snapshot(fuzzconn)
    if construct is not None:
        with pytest.raises(DefinitionError) as info:
            engine.create(fuzzconn, "tv_extreme", text)
        assert info.value.construct == construct, info.value
        assert snapshot(fuzzconn) == before
        return
    tview = engine.create(fuzzconn, "tv_extreme", text)
    fuzzconn.execute("UPDATE tb_user SET name = name || '!', score = coalesce(score, 0) + 1")
    assert_exact(fuzzconn, tview.name)
    engine.drop(fuzzconn, tview.name)
    assert snapshot(fuzzconn) == before
    assert_idle(fuzzconn)
