"""Hostile names and options: quoted or rejected with a clear error, never executed as SQL.

Names arrive through the Python API, the command line (a real subprocess) and the SQL API
(pg_tviews_refresh, pg_tviews_drop). Every test keeps a canary table and compares every object of
the database before and after: nothing unexpected is created or dropped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from oracle import assert_exact
from pg_tviews import engine
from pg_tviews.errors import DefinitionError, NotFound, UsageError
from pg_tviews.identifiers import split_identifier_chain
from test_fuzz_analyzer import snapshot

SCHEMA = """
CREATE TABLE victim (x int);
INSERT INTO victim VALUES (1);
CREATE TABLE tb_user (pk_user bigint PRIMARY KEY, name text NOT NULL);
INSERT INTO tb_user VALUES (1, 'ada'), (2, 'bob');
CREATE SCHEMA "My ""App"" Schema";
CREATE TABLE "My ""App"" Schema"."tb user; DROP TABLE victim; --" (
    "pk user" bigint PRIMARY KEY,
    "na""me" text NOT NULL,
    "ünï ✓" text,
    "col_____________________________________________________63_bytes" int);
INSERT INTO "My ""App"" Schema"."tb user; DROP TABLE victim; --" VALUES (1, 'ada', 'x', 7), (2, 'bob', NULL, NULL);
"""

SIMPLE = "SELECT u.pk_user, jsonb_build_object('name', u.name) AS data FROM tb_user u"

# reads hostile schema, table and column names, and outputs hostile column names
HOSTILE = """SELECT s."pk user",
       jsonb_build_object('name', s."na""me", 'ü', s."ünï ✓") AS "data; DROP TABLE victim; --",
       s."col_____________________________________________________63_bytes" AS "Ünï""'$1 %s {0}"
  FROM "My ""App"" Schema"."tb user; DROP TABLE victim; --" s"""

# names as a user types them (identifier syntax) -> the relation PostgreSQL itself would name
ACCEPTED_NAMES = [
    ('"tv_x; DROP TABLE victim; --"', "public", "tv_x; DROP TABLE victim; --"),
    ('"tv ""quoted"" name"', "public", 'tv "quoted" name'),
    ("\"tv'); DROP TABLE victim; --\"", "public", "tv'); DROP TABLE victim; --"),
    ('"Tv Mixed Case"', "public", "Tv Mixed Case"),
    ("TV_Upper", "public", "tv_upper"),
    ("tv_Über", "public", "tv_Über"),  # PostgreSQL folds only ASCII letters in a UTF-8 database
    ("tv_ünïcødé", "public", "tv_ünïcødé"),
    ('"tv 🚀 emoji"', "public", "tv 🚀 emoji"),
    ('"tv\\ back\\slash"', "public", "tv\\ back\\slash"),
    ('"tv\nnew line"', "public", "tv\nnew line"),
    ('"tv $1 %s {0} %I"', "public", "tv $1 %s {0} %I"),
    ('"tv[bold]markup[/]"', "public", "tv[bold]markup[/]"),
    ("t" * 63, "public", "t" * 63),
    ("tv_" + "é" * 30, "public", "tv_" + "é" * 30),  # 63 bytes
    ('"My ""App"" Schema"."tv; DELETE FROM victim"', 'My "App" Schema', "tv; DELETE FROM victim"),
    ('  public . "tv spaced"  ', "public", "tv spaced"),
]

REJECTED_NAMES = [
    "tv_x; DROP TABLE victim",
    "tv_x' OR '1'='1",
    "tv_x--comment",
    "tv_x/*c*/",
    "tv x",
    'tv_x"',
    '"tv_x',
    '""',
    "",
    "   ",
    ".tv_x",
    "tv_x.",
    "a.b.c",
    "1tv",
    'U&"\\0041"',
    "t" * 64,
    "tv_" + "é" * 31,  # 65 bytes
    "tv\x00x",
    '"tv\x00x"',
    "tv_\udcff",  # an undecodable byte of a command line, as Python passes it
    "tv_x\u0000; DROP TABLE victim",
]


@pytest.fixture
def hostile(tvconn):
    tvconn.execute(SCHEMA)
    return tvconn


def canary_alive(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT count(*) FROM victim").fetchone()[0] == 1


def exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                        (sql.Identifier(schema, table).as_string(conn),)).fetchone()[0]


# -- Python API ---------------------------------------------------------------------------------------------


@pytest.mark.majors("newest")
@pytest.mark.parametrize("name, schema, table", ACCEPTED_NAMES, ids=[repr(n[0])[:40] for n in ACCEPTED_NAMES])
def test_hostile_tview_names_are_quoted(pg, hostile, name, schema, table):
    before = snapshot(hostile)
    tview = engine.create(hostile, name, SIMPLE)
    assert (tview.schema, tview.table) == (schema, table)
    assert exists(hostile, schema, table)
    hostile.execute("UPDATE tb_user SET name = 'ADA' WHERE pk_user = 1")
    assert_exact(hostile, table)
    assert engine.get(hostile, name).id == tview.id
    assert engine.refresh(hostile, name) == 0
    assert engine.explain(hostile, name).tview.id == tview.id
    assert engine.alter(hostile, name, mode="deferred").mode == "deferred"
    assert engine.drop(hostile, name) is True
    assert canary_alive(hostile)
    assert snapshot(hostile) == before


@pytest.mark.majors("newest")
@pytest.mark.parametrize("name", REJECTED_NAMES, ids=[repr(n)[:30] for n in REJECTED_NAMES])
def test_invalid_names_are_rejected_before_any_sql(pg, hostile, name):
    before = snapshot(hostile)
    for call in (lambda: engine.create(hostile, name, SIMPLE), lambda: engine.get(hostile, name),
                 lambda: engine.refresh(hostile, name), lambda: engine.drop(hostile, name),
                 lambda: engine.explain(hostile, name), lambda: engine.alter(hostile, name, mode="async")):
        with pytest.raises(UsageError) as info:
            call()
        assert info.value.message
    assert canary_alive(hostile)
    assert snapshot(hostile) == before


@pytest.mark.majors("newest")
def test_hostile_source_schema_table_and_column_names(pg, hostile):
    before = snapshot(hostile)
    name = '"My ""App"" Schema"."tv; DELETE FROM victim"'
    tview = engine.create(hostile, name, HOSTILE, key="pk user")
    assert tview.sources[0].table == "tb user; DROP TABLE victim; --"
    source = '"My ""App"" Schema"."tb user; DROP TABLE victim; --"'
    for statement in (f'INSERT INTO {source} VALUES (3, \'cy\', \'ü\', 1)',
                      f'UPDATE {source} SET "na""me" = \'it\'\'s\', "ünï ✓" = NULL WHERE "pk user" = 1',
                      f'UPDATE {source} SET "col_____________________________________________________63_bytes" = 2',
                      f'DELETE FROM {source} WHERE "pk user" = 2'):
        hostile.execute(statement)
        assert_exact(hostile, tview.table, context=f"after {statement}")
    row = hostile.execute(sql.SQL('SELECT {} FROM {} WHERE "pk user" = 1').format(
        sql.Identifier("data; DROP TABLE victim; --"), sql.Identifier(tview.schema, tview.table))).fetchone()
    assert row[0] == {"name": "it's", "ü": None}
    assert engine.explain(hostile, name).sources[0].name == tview.sources[0].name
    engine.drop(hostile, name)
    assert canary_alive(hostile)
    assert snapshot(hostile) == before


@pytest.mark.majors("newest")
def test_explain_suggests_indexes_with_quoted_names(pg, hostile):
    """The CREATE INDEX that explain suggests is valid SQL for any schema and table name, even
    names with dots and quotes, and creates the index it describes."""
    hostile.execute('CREATE SCHEMA "odd.schema"; CREATE TABLE "odd.schema"."tb.child" '
                    '(pk_child bigint PRIMARY KEY, "fk.user" bigint NOT NULL, body text)')
    engine.create(hostile, "tv_user_children", """
        SELECT u.pk_user, (SELECT jsonb_agg(c.body) FROM "odd.schema"."tb.child" c
                            WHERE c."fk.user" = u.pk_user) AS children
          FROM tb_user u""")
    missing = engine.explain(hostile, "tv_user_children").missing_indexes
    assert [m.columns for m in missing] == [["fk.user"]]
    hostile.execute(missing[0].create_sql)
    assert engine.explain(hostile, "tv_user_children").missing_indexes == []


@pytest.mark.majors("newest")
@pytest.mark.parametrize("key", ["pk_user; DROP TABLE victim", "pk_user\" OR \"1", "pk_user\x00", "PK_USER", ""])
def test_hostile_key_option_is_rejected(pg, hostile, key):
    before = snapshot(hostile)
    with pytest.raises(DefinitionError, match="is not an output column"):
        engine.create(hostile, "tv_user", SIMPLE, key=key)
    assert canary_alive(hostile) and snapshot(hostile) == before


@pytest.mark.majors("newest")
@pytest.mark.parametrize("mode", ["immediate'; DROP TABLE victim; --", "IMMEDIATE", "", "async\x00"])
def test_hostile_mode_option_is_rejected(pg, hostile, mode):
    before = snapshot(hostile)
    with pytest.raises(UsageError, match="unknown mode"):
        engine.create(hostile, "tv_user", SIMPLE, mode=mode)
    engine.create(hostile, "tv_user", SIMPLE)
    with pytest.raises(UsageError, match="unknown mode"):
        engine.alter(hostile, "tv_user", mode=mode)
    engine.drop(hostile, "tv_user")
    assert canary_alive(hostile) and snapshot(hostile) == before


@pytest.mark.majors("newest")
def test_names_that_are_not_tviews_are_never_dropped(pg, hostile):
    before = snapshot(hostile)
    for name in ("victim", "tb_user", '"My ""App"" Schema"."tb user; DROP TABLE victim; --"'):
        with pytest.raises(NotFound):
            engine.drop(hostile, name)
        assert engine.drop(hostile, name, if_exists=True) is False
    assert snapshot(hostile) == before


# -- names compared with PostgreSQL's own parser ----------------------------------------------------------

name_parts = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_$]{0,10}", fullmatch=True),
)
name_texts = st.lists(name_parts.map(lambda p: p if p.isidentifier() else '"' + p.replace('"', '""') + '"'),
                      min_size=1, max_size=3).map(".".join)


@pytest.mark.majors("newest")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(name_texts, st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
                                          max_size=20)))
def test_names_split_like_postgresql_parse_ident(pg, tvconn, text):
    """Every name pg_tviews accepts means what it means to PostgreSQL (parse_ident, with the same
    folding of unquoted letters); what pg_tviews rejects is a UsageError."""
    try:
        ours = split_identifier_chain(text)
    except UsageError:
        return
    theirs = tvconn.execute("SELECT parse_ident(%s)", (text,)).fetchone()[0]
    assert ours == theirs


# -- SQL API --------------------------------------------------------------------------------------------------

SQL_API_HOSTILE = [
    "tv_user; DROP TABLE victim",
    "tv_user'); DROP TABLE victim; --",
    'tv_user"; DROP TABLE victim; --',
    '"tv_user',
    "public.tv_user.x.y",
    "victim",
    "tb_user",
    "",
    "x" * 10_000,
    "pg_catalog.pg_class",
    "tviews.entity",
    "$$; DROP TABLE victim; $$",
]


@pytest.mark.parametrize("name", SQL_API_HOSTILE, ids=[repr(n)[:30] for n in SQL_API_HOSTILE])
def test_sql_api_with_hostile_text(pg, hostile, name):
    """pg_tviews_refresh and pg_tviews_drop read their argument as a name, never as SQL: any text
    that does not designate a TVIEW is an error (or false with if_exists) and changes nothing."""
    engine.create(hostile, "tv_user", SIMPLE)
    before = snapshot(hostile)
    for call, params in (("SELECT tviews.pg_tviews_refresh(%s)", (name,)),
                         ("SELECT tviews.pg_tviews_refresh(%s, ARRAY[1, 2])", (name,)),
                         ("SELECT tviews.pg_tviews_drop(%s)", (name,))):
        with pytest.raises(psycopg.Error) as info:
            hostile.execute(call, params)
        # no such TVIEW, or not a name at all
        assert info.value.sqlstate in ("42P01", "42601", "42602", "22023", "42704"), info.value
    try:
        assert hostile.execute("SELECT tviews.pg_tviews_drop(%s, true)", (name,)).fetchone()[0] is False
    except psycopg.Error as error:  # PostgreSQL 15 rejects malformed names instead of finding nothing
        assert error.sqlstate in ("42601", "42602", "22023"), error
    assert canary_alive(hostile)
    assert snapshot(hostile) == before


@pytest.mark.majors("newest")
def test_sql_api_with_quoted_hostile_names(pg, hostile):
    """A TVIEW with a hostile name is reached through the SQL API by its quoted name."""
    before = snapshot(hostile)
    engine.create(hostile, '"My ""App"" Schema"."tv; DELETE FROM victim"', HOSTILE, key="pk user")
    quoted = '"My ""App"" Schema"."tv; DELETE FROM victim"'
    assert hostile.execute("SELECT tviews.pg_tviews_refresh(%s, ARRAY[1])", (quoted,)).fetchone()[0] == 0
    assert hostile.execute("SELECT tviews.pg_tviews_refresh(%s)", (quoted,)).fetchone()[0] == 0
    assert hostile.execute("SELECT tviews.pg_tviews_drop(%s)", (quoted,)).fetchone()[0] is True
    assert canary_alive(hostile)
    assert snapshot(hostile) == before


# -- command line ---------------------------------------------------------------------------------------------


def cli(*args: str | bytes) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PG_TVIEWS_DSN", "DATABASE_URL", "PGHOST", "PGDATABASE")}
    return subprocess.run([sys.executable, "-m", "pg_tviews", *args], capture_output=True, env=env, timeout=120)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 2, (result.returncode, stderr)
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return stderr


@pytest.mark.majors("newest")
def test_cli_quotes_hostile_names(pg, hostile, tvdb):
    before = snapshot(hostile)
    name = '"My ""App"" Schema"."tv[/]; DROP TABLE victim; --"'
    created = cli("--dsn", tvdb, "create", name, "--sql", HOSTILE, "--key", "pk user")
    assert created.returncode == 0, created.stderr.decode()
    assert "tv[/]; DROP TABLE victim; --" in created.stdout.decode()
    for command in (["show", name], ["explain", name], ["list"], ["refresh", name], ["refresh", name, "--key", "1"]):
        result = cli("--dsn", tvdb, *command)
        assert result.returncode == 0, (command, result.stderr.decode())
        assert "Traceback" not in result.stderr.decode()
    listed = json.loads(cli("--dsn", tvdb, "--json", "list").stdout)
    assert [(t["schema"], t["table"]) for t in listed] == [('My "App" Schema', "tv[/]; DROP TABLE victim; --")]
    assert cli("--dsn", tvdb, "drop", name).returncode == 0
    assert canary_alive(hostile)
    assert snapshot(hostile) == before


@pytest.mark.majors("newest")
def test_cli_rejects_hostile_input_with_one_line_errors(pg, hostile, tvdb):
    before = snapshot(hostile)
    cases = [
        (["create", "tv_x; DROP TABLE victim", "--sql", SIMPLE], "invalid name"),
        (["create", b"tv_\xff", "--sql", SIMPLE], "not valid Unicode"),
        (["create", "t" * 64, "--sql", SIMPLE], "63 bytes"),
        (["create", "tv_user", "--sql", SIMPLE + "; DROP TABLE victim"], "exactly one SELECT"),
        (["create", "tv_user", "--sql", "DROP TABLE victim"], "must be a SELECT"),
        (["create", "tv_user", "--sql", SIMPLE, "--mode", "immediate; DROP TABLE victim"], "unknown mode"),
        (["create", "tv_user", "--sql", SIMPLE, "--key", "pk_user; DROP TABLE victim"], "not an output column"),
        (["drop", "victim"], "does not exist"),
        (["drop", "victim; DROP TABLE victim"], "invalid name"),
        (["refresh", "tv_user'; DROP TABLE victim; --"], "invalid name"),
        (["show", '"unterminated'], "unterminated quoted identifier"),
        (["explain", "tb_user"], "does not exist"),
    ]
    for args, message in cases:
        stderr = one_line_error(cli("--dsn", tvdb, *args))
        assert message in stderr, (args, stderr)
    refreshed = cli("--dsn", tvdb, "refresh", "tv_user", "--key", "1; DROP TABLE victim")
    assert refreshed.returncode == 2 and "Traceback" not in refreshed.stderr.decode()
    assert canary_alive(hostile)
    assert snapshot(hostile) == before


# -- definitions are read the way PostgreSQL reads them ---------------------------------------------------------

# With standard_conforming_strings on, 'a\' is a string and the rest of the line a comment; with it off,
# the backslash escapes the quote and the statement also reads `victim`, which would get no triggers.
DIFFERENTIAL = "SELECT u.pk_user, 'a\\' AS b --' AS c, (SELECT max(x) FROM victim) AS d\n  FROM tb_user u"


@pytest.mark.majors("newest")
def test_definitions_are_read_as_postgresql_reads_them(pg, hostile):
    before = snapshot(hostile)
    hostile.execute("SET standard_conforming_strings = off")
    with pytest.raises(DefinitionError, match="standard_conforming_strings is off") as info:
        engine.create(hostile, "tv_literal", DIFFERENTIAL)
    assert info.value.hint == "SET standard_conforming_strings = on (the default)"
    assert snapshot(hostile) == before
    hostile.execute("RESET standard_conforming_strings")
    tview = engine.create(hostile, "tv_literal", DIFFERENTIAL)
    assert [s.name for s in tview.sources] == ["public.tb_user"]
    assert hostile.execute("SELECT b FROM tv_literal WHERE pk_user = 1").fetchone()[0] == "a\\"
    hostile.execute("INSERT INTO victim VALUES (2)")
    assert_exact(hostile, "tv_literal")
