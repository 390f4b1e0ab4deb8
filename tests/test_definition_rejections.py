"""Every unsupported construct is rejected with a DefinitionError naming it, its line:column and a
hint, and a rejected creation leaves nothing behind."""

from __future__ import annotations

import pytest

from pg_tviews import engine
from pg_tviews.errors import DefinitionError

SCHEMA = """
CREATE TABLE tb_user (pk_user bigint PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE tb_post (pk_post bigint PRIMARY KEY, fk_user bigint REFERENCES tb_user, title text);
CREATE MATERIALIZED VIEW mv_user AS SELECT * FROM tb_user;
"""

# (definition, message fragment, construct, line, column); positions are 1-based
CASES = [
    ("SELECT u.pk_user FROM tb_user u\nUNION SELECT p.pk_post FROM tb_post p",
     "set operations", "set operation", 2, 1),
    ("WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3)\n"
     "SELECT u.pk_user FROM tb_user u",
     "recursive CTEs", "recursive CTE", 1, 1),
    ("SELECT u.pk_user,\n       row_number() OVER (ORDER BY u.name) AS rn\n  FROM tb_user u",
     "window functions", "window function", 2, 8),
    ("SELECT u.pk_user FROM tb_user u ORDER BY u.pk_user LIMIT 10",
     "LIMIT/OFFSET", "LIMIT/OFFSET", 1, 52),
    ("SELECT u.pk_user FROM tb_user u OFFSET 5",
     "LIMIT/OFFSET", "LIMIT/OFFSET", 1, 33),
    ("SELECT DISTINCT ON (u.name) u.pk_user FROM tb_user u",
     "DISTINCT ON", "DISTINCT ON", 1, 21),
    ("SELECT u.pk_user, random() AS r FROM tb_user u",
     "volatile function random()", "volatile function", 1, 19),
    ("SELECT u.pk_user, p.title\n  FROM tb_user u JOIN tb_post p ON p.fk_user < u.pk_user",
     "no equality join path between public.tb_post AS p and the root public.tb_user AS u",
     "non-equi join", 2, 23),
    ("SELECT u.pk_user, (SELECT count(*) FROM tb_post) AS posts FROM tb_user u",
     "uncorrelated aggregate subquery over public.tb_post", "uncorrelated aggregate subquery", 1, 19),
    ("SELECT u.pk_user, u.pk_user + 1 FROM tb_user u",
     "output column 2 has no name", "unnamed column", 1, 19),
    ("SELECT u.pk_user, u.name, u.email AS name FROM tb_user u",
     "output column 'name' appears more than once", "duplicate column", 1, 27),
    ("SELECT u.pk_user INTO TEMP copy FROM tb_user u",
     "SELECT INTO is not allowed", "SELECT INTO", 1, 1),
    ("SELECT u.pk_user FROM tb_user u FOR UPDATE",
     "FOR UPDATE/SHARE", "locking clause", 1, 33),
    ("SELECT p.pk_user FROM (SELECT u.pk_user FROM tb_user u) p NATURAL JOIN tb_post q",
     "NATURAL joins", "NATURAL JOIN", 1, 59),
    ("SELECT u.pk_user, g FROM tb_user u, generate_series(1, 3) g",
     "functions in FROM", "function in FROM", 1, 37),
    ("SELECT u.pk_user, p.title FROM tb_user u JOIN tb_post p ON p.fk_user = u.pk_user",
     "can repeat a root row", "row-multiplying join", 1, 47),
    ("SELECT m.pk_user FROM mv_user m",
     "is a materialized view", "materialized view", 1, 23),
    ("SELECT count(*) AS pk_count FROM tb_user u",
     "aggregate over all rows", "aggregate without GROUP BY", 1, 8),
    ("SELECT u.pk_user, count(p.pk_post) AS n\n  FROM tb_user u LEFT JOIN tb_post p ON p.fk_user = u.pk_user\n GROUP BY u.name",
     'column "u.pk_user" must appear in the GROUP BY clause', "sql", 1, 8),
    ("SELECT u.pk_user, u.pk_user IN (SELECT p.fk_user FROM tb_post p) AS has_posts FROM tb_user u",
     "IN (subquery) over the nullable column public.tb_post.fk_user", "IN over nullable column", 1, 29),
    ("SELECT u.name AS pk_name FROM tb_user u",
     "not a unique, not-null column", "key", 1, 8),
    ("SELECT lower(u.name) AS pk_x FROM tb_user u",
     "must be a plain column of the root table", "key", 1, 8),
    ("SELECT u.name, u.email FROM tb_user u",
     "no key column", "key", 1, 1),
    ("SELECT u.pk_user, u.nope FROM tb_user u",
     'column u.nope does not exist', "sql", 1, 19),
    ("SELECT u.pk_user FROM tb_user u WHERE",
     "syntax error", "syntax", 1, 38),
    ("SELECT 1 AS pk_one; DROP TABLE tb_user",
     "exactly one SELECT statement, found 2", "multiple statements", 1, 21),
    ("DELETE FROM tb_user",
     "must be a SELECT, not DELETE", "DELETE", 1, 1),
]


@pytest.fixture
def schema(tvconn):
    tvconn.execute(SCHEMA)
    return tvconn


def _relations(conn) -> set[str]:
    return {r[0] for r in conn.execute(
        "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname IN ('public', 'tviews')")}


@pytest.mark.majors("newest")
@pytest.mark.parametrize("definition, message, construct, line, column", CASES,
                         ids=[c[2] + "-" + str(i) for i, c in enumerate(CASES)])
def test_rejected_with_construct_and_position(pg, schema, definition, message, construct, line, column):
    before = _relations(schema)
    with pytest.raises(DefinitionError) as info:
        engine.create(schema, "tv_rejected", definition)
    error = info.value
    assert message in error.message, error.message
    assert error.construct == construct
    assert (error.line, error.column) == (line, column), f"{error} at {error.line}:{error.column}"
    assert error.hint or construct in ("sql", "syntax", "DELETE", "SELECT INTO", "multiple statements")
    assert _relations(schema) == before
    assert schema.execute("SELECT count(*) FROM tviews.entity").fetchone()[0] == 0


@pytest.mark.majors("newest")
def test_key_must_be_integer(pg, tvconn):
    tvconn.execute("CREATE TABLE tb_doc (pk_doc text PRIMARY KEY, body text)")
    with pytest.raises(DefinitionError, match="has type text; TVIEW keys must be smallint, integer or bigint"):
        engine.create(tvconn, "tv_doc", "SELECT d.pk_doc, d.body FROM tb_doc d")


@pytest.mark.majors("newest")
def test_temporary_tables_are_not_sources(pg, tvconn):
    tvconn.execute("CREATE TEMP TABLE tb_tmp (pk_tmp int PRIMARY KEY)")
    with pytest.raises(DefinitionError, match="temporary table"):
        engine.create(tvconn, "tv_tmp", "SELECT t.pk_tmp FROM tb_tmp t")


@pytest.mark.majors("newest")
def test_a_tview_cannot_depend_on_itself(pg, schema):
    """Dependency cycles: a TVIEW can only read relations that exist, and a TVIEW read by another
    cannot be dropped, so the only possible cycle is a definition reading its own table."""
    from pg_tviews.definition import analyze

    schema.execute("CREATE TABLE tv_self (pk_self bigint PRIMARY KEY)")
    definition = analyze(schema, "SELECT s.pk_self FROM tv_self s")
    with pytest.raises(DefinitionError, match="dependency cycle|must not form a cycle"):
        engine._rank(schema, definition, ("public", "tv_self"))


@pytest.mark.majors("newest")
def test_correlated_limits_windows_and_distinct_on_are_allowed(pg, schema):
    """Per-root constructs inside a correlated subquery are exact: they see one root's children."""
    engine.create(schema, "tv_user", """
        SELECT u.pk_user,
               (SELECT jsonb_agg(x.title ORDER BY x.rn) FROM (
                    SELECT p.title, row_number() OVER (ORDER BY p.pk_post DESC) AS rn
                      FROM tb_post p WHERE p.fk_user = u.pk_user ORDER BY p.pk_post DESC LIMIT 2) x) AS latest,
               (SELECT DISTINCT ON (p.fk_user) p.title FROM tb_post p WHERE p.fk_user = u.pk_user
                 ORDER BY p.fk_user, p.pk_post) AS first_title
          FROM tb_user u""")
    from oracle import assert_exact

    schema.execute("INSERT INTO tb_user VALUES (1, 'a'), (2, 'b')")
    schema.execute("INSERT INTO tb_post SELECT g, 1 + g % 2, 't' || g FROM generate_series(1, 9) g")
    assert_exact(schema, "tv_user")
    schema.execute("DELETE FROM tb_post WHERE pk_post IN (8, 9)")
    assert_exact(schema, "tv_user")
