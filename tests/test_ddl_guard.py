"""DDL on sources: what would break a TVIEW is refused at DDL time, naming the TVIEW and the fix;
what does not break it goes through and the TVIEW stays exact."""

from __future__ import annotations

import psycopg
import pytest

import workload
from oracle import assert_exact
from pg_tviews import catalog, engine
from pg_tviews.catalog import extension

GUARD = psycopg.errors.DependentObjectsStillExist


def tview_id(conn: psycopg.Connection, name: str) -> int:
    return conn.execute("SELECT id FROM tviews.entity WHERE table_name = %s", (name,)).fetchone()[0]


def snapshot(conn: psycopg.Connection) -> tuple:
    """The catalog and the objects generated from it: a refused DDL must change none of them."""
    return (
        conn.execute("SELECT id, definition FROM tviews.entity ORDER BY id").fetchall(),
        conn.execute("SELECT * FROM tviews.entity_source ORDER BY entity_id, position").fetchall(),
        conn.execute("SELECT c.relname, a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
                     " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND a.attnum > 0"
                     " AND NOT a.attisdropped ORDER BY 1, 2").fetchall(),
        conn.execute("SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger"
                     " WHERE tgname LIKE '%pg_tviews%' ORDER BY 1, 2").fetchall(),
        conn.execute("SELECT proname FROM pg_proc WHERE pronamespace = 'tviews'::regnamespace ORDER BY 1").fetchall(),
    )


def some_writes(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO tb_user (pk_user, name) VALUES (100, 'newcomer')")
    conn.execute("INSERT INTO tb_post (pk_post, fk_user, title) VALUES (100, 100, 'hello')")
    conn.execute("INSERT INTO tb_comment (pk_comment, fk_post, fk_user, body) VALUES (1000, 1, 100, 'hi')")
    conn.execute("UPDATE tb_user SET name = 'renamed' WHERE pk_user = 2")
    conn.execute("UPDATE tb_post SET title = 'retitled' WHERE pk_post = 3")
    conn.execute("DELETE FROM tb_comment WHERE pk_comment = 5")
    assert_exact(conn, *workload.TVIEWS)


@pytest.mark.parametrize(("statement", "message"), [
    ("ALTER TABLE tb_user RENAME TO tb_member", r"table public\.tb_member is read by TVIEW public\.tv_post: "
                                                r"it cannot be renamed or moved \(it was public\.tb_user\)"),
    ("ALTER TABLE tb_post RENAME COLUMN title TO headline",
     r"column public\.tb_post\.title is read by TVIEW public\.tv_post \(renamed to headline\)"),
    ("ALTER TABLE tb_comment RENAME COLUMN fk_post TO fk_article", r"column public\.tb_comment\.fk_post is read by TVIEW"),
    ("CREATE SCHEMA elsewhere; ALTER TABLE tb_like SET SCHEMA elsewhere",
     r"table elsewhere\.tb_like is read by TVIEW public\.tv_post: it cannot be renamed or moved"),
    ("ALTER TABLE tv_user RENAME COLUMN posts TO post_count",
     r"the columns of TVIEW public\.tv_user must stay those of its definition"),
    ("ALTER TABLE tv_user ADD COLUMN extra int", r"the columns of TVIEW public\.tv_user must stay those"),
    ("ALTER TABLE tv_feed ALTER COLUMN author TYPE varchar(50)", r"the columns of TVIEW public\.tv_feed must stay"),
    ("ALTER TABLE tv_feed DROP COLUMN author", r"the columns of TVIEW public\.tv_feed must stay those"),
    ("ALTER TABLE tv_user RENAME TO tv_member", r"table public\.tv_member is TVIEW public\.tv_user: it cannot be renamed"),
    ("ALTER SCHEMA public RENAME TO app", r"schema app holds TVIEW public\.tv_post or what it reads: it cannot be renamed"),
])
def test_renames_that_break_a_tview_are_refused_and_change_nothing(pg, tvconn, statement, message):
    workload.setup(tvconn)
    before = snapshot(tvconn)
    with pytest.raises(GUARD, match=message) as refused:
        with tvconn.transaction():
            tvconn.execute(statement)
    hint = refused.value.diag.message_hint
    assert "rename it back" in hint or "create it again" in hint
    assert snapshot(tvconn) == before
    some_writes(tvconn)


def test_rename_hint_names_the_way_through(pg, tvconn):
    workload.setup(tvconn)
    with pytest.raises(GUARD) as refused:
        tvconn.execute("ALTER TABLE tb_user RENAME COLUMN name TO full_name")
    assert "SET pg_tviews.ddl_guard = off" in refused.value.diag.message_hint
    assert "pg-tviews doctor --repair" in refused.value.diag.message_hint
    assert "tv_post" in refused.value.diag.message_primary
    assert "tv_user" in (refused.value.diag.message_detail or "")  # every TVIEW concerned


def test_renaming_a_view_in_between_is_refused(pg, tvconn):
    tvconn.execute("CREATE TABLE tb_item (pk_item bigint PRIMARY KEY, label text NOT NULL, note text, extra int)")
    tvconn.execute("INSERT INTO tb_item VALUES (1, 'a', 'x'), (2, 'b', 'y')")
    tvconn.execute("CREATE VIEW v_item AS SELECT pk_item, upper(label) AS label, note FROM tb_item")
    engine.create(tvconn, "tv_item", "SELECT i.pk_item, i.label FROM v_item i")
    for statement, message in [
        ("ALTER VIEW v_item RENAME TO v_thing", r"view public\.v_thing is read by TVIEW public\.tv_item"),
        ("ALTER VIEW v_item RENAME COLUMN label TO title", r"column public\.v_item\.title \(just renamed\) is read by"),
        ("ALTER TABLE tb_item RENAME COLUMN label TO title",
         r"column public\.tb_item\.label is read by TVIEW public\.tv_item \(renamed to title\)"),
    ]:
        with pytest.raises(GUARD, match=message):
            tvconn.execute(statement)
    tvconn.execute("ALTER VIEW v_item RENAME COLUMN note TO remark")  # not read by the TVIEW
    tvconn.execute("ALTER TABLE tb_item RENAME COLUMN extra TO spare")  # not even read by the view
    tvconn.execute("UPDATE tb_item SET label = 'c' WHERE pk_item = 2")
    assert_exact(tvconn, "tv_item")


def test_unread_columns_and_new_columns_are_allowed(pg, tvconn):
    workload.setup(tvconn)
    tvconn.execute("ALTER TABLE tb_user RENAME COLUMN last_seen TO seen_at")
    tvconn.execute("ALTER TABLE tb_post ADD COLUMN subtitle text")
    tvconn.execute("ALTER TABLE tb_post DROP COLUMN views")
    tvconn.execute("ALTER TABLE tb_user ALTER COLUMN seen_at TYPE timestamp")
    tvconn.execute("CREATE INDEX ON tb_post (title)")
    tvconn.execute("ALTER TABLE tb_post ALTER COLUMN subtitle SET DEFAULT 'none'")
    tvconn.execute("UPDATE tb_user SET seen_at = now() WHERE pk_user = 1")
    tvconn.execute("UPDATE tb_post SET subtitle = 'sub' WHERE pk_post = 2")
    some_writes(tvconn)


@pytest.mark.parametrize(("statement", "message"), [
    ("ALTER TABLE tb_post DROP COLUMN title", r"cannot drop column title of table tb_post because other objects"),
    ("ALTER TABLE tb_post DROP COLUMN title CASCADE",
     r"column public\.tb_post\.title is read by TVIEW public\.tv_post"),
    ("DROP TABLE tb_like", r"cannot drop table tb_like because other objects depend on it"),
    ("DROP TABLE tb_like CASCADE", r"table public\.tb_like is read by TVIEW public\.tv_post"),
    ("ALTER TABLE tb_post ALTER COLUMN title TYPE varchar(20)",
     r"cannot alter type of a column used by a view or rule"),
    ("DROP TABLE tv_feed", r"table public\.tv_feed is a TVIEW"),
    ("DROP TABLE tv_user", r"cannot drop table tv_user because other objects depend on it"),
    ("DROP TABLE tv_post CASCADE", r"table public\.tv_post is a TVIEW"),
    ("DROP VIEW tviews.tv{post}_def CASCADE", r"view tviews\.tv\d+_def holds the definition of TVIEW public\.tv_post"),
    ("DROP TRIGGER pg_tviews_{post}_ins ON tb_post", r"trigger pg_tviews_\d+_ins on public\.tb_post maintains TVIEW"),
    ('DROP TRIGGER "~pg_tviews_{post}_gate" ON tb_user', r"maintains TVIEW public\.tv_post"),
    ("DROP FUNCTION tviews.tv{post}_s1_ins() CASCADE", r"function tviews\.tv\d+_s1_ins\(\) maintains TVIEW"),
    ("DROP SCHEMA public CASCADE", r"would drop TVIEW|is read by TVIEW|is a TVIEW"),
])
def test_drops_and_retypes_that_break_a_tview_are_refused(pg, tvconn, statement, message):
    workload.setup(tvconn)
    before = snapshot(tvconn)
    # PostgreSQL refuses some of them itself (the definition view depends on what it reads), the
    # guard the rest
    error = psycopg.errors.FeatureNotSupported if "TYPE" in statement else GUARD
    with pytest.raises(error, match=message) as refused:
        tvconn.execute(statement.format(post=tview_id(tvconn, "tv_post")))
    assert refused.value.diag.message_hint or refused.value.diag.message_detail
    assert snapshot(tvconn) == before
    some_writes(tvconn)


def test_drop_table_hint_and_pg_tviews_drop(pg, tvconn):
    workload.setup(tvconn)
    with pytest.raises(GUARD) as refused:
        tvconn.execute("DROP TABLE tv_feed")
    assert "pg_tviews_drop('public.tv_feed')" in refused.value.diag.message_hint
    assert tvconn.execute("SELECT tviews.pg_tviews_drop('tv_feed')").fetchone()[0]
    engine.drop(tvconn, "tv_post")
    assert tvconn.execute("SELECT to_regclass('tv_post') IS NULL AND to_regclass('tv_feed') IS NULL").fetchone()[0]
    tvconn.execute("DROP TABLE tb_like")  # nothing reads it any more
    some_writes_user_only = "UPDATE tb_user SET name = 'x' WHERE pk_user = 1"
    tvconn.execute(some_writes_user_only)
    assert_exact(tvconn, "tv_user")


def test_disabling_a_generated_trigger_is_allowed_and_found(pg, tvconn):
    """Disabling triggers is an operator's tool (bulk loads): allowed, and reported until repaired."""
    workload.setup(tvconn)
    entity = tview_id(tvconn, "tv_post")
    tvconn.execute(f"ALTER TABLE tb_post DISABLE TRIGGER pg_tviews_{entity}_ins")
    health = tvconn.execute("SELECT status FROM tviews.pg_tviews_health_check(0) WHERE component = 'triggers'"
                            " AND status <> 'ok'").fetchall()
    assert health


def test_guard_turned_off_lets_a_rename_through(pg, tvconn):
    workload.setup(tvconn)
    with tvconn.transaction():
        tvconn.execute("SET LOCAL pg_tviews.ddl_guard = off")
        tvconn.execute("ALTER TABLE tb_post RENAME COLUMN title TO headline")
    assert tvconn.execute("SELECT message FROM tviews.pg_tviews_health_check(0) WHERE component = 'guard'"
                          ).fetchone()[0].startswith("DDL guard active")


def test_health_reports_the_guard(pg, tvconn):
    assert tvconn.execute("SELECT status FROM tviews.pg_tviews_health_check(0) WHERE component = 'guard'"
                          ).fetchone()[0] == "ok"
    tvconn.execute("SET pg_tviews.ddl_guard = off")
    assert tvconn.execute("SELECT status, message FROM tviews.pg_tviews_health_check(0) WHERE component = 'guard'"
                          ).fetchone()[0] == "warn"
    tvconn.execute("RESET pg_tviews.ddl_guard")
    tvconn.execute("ALTER EVENT TRIGGER pg_tviews_drop_guard DISABLE")
    row = tvconn.execute("SELECT status, message FROM tviews.pg_tviews_health_check(0) WHERE component = 'guard'"
                         ).fetchone()
    assert row[0] == "warn" and "pg-tviews doctor" in row[1]


def test_dropping_the_catalog_itself_is_not_refused(pg, tvconn):
    workload.setup(tvconn)
    tvconn.execute("DROP SCHEMA tviews CASCADE")
    assert tvconn.execute("SELECT count(*) FROM pg_event_trigger").fetchone()[0] == 0
    tvconn.execute("ALTER TABLE tb_user RENAME COLUMN name TO full_name")  # no catalog, nothing to guard


def test_in_extension_mode_the_guard_belongs_to_the_extension(pg, conn):
    extension.install_files(pg.cluster.binaries.sharedir())
    catalog.install(conn, mode="extension")
    conn.execute("SET search_path = public, tviews")
    members = conn.execute(
        "SELECT array_agg(e.evtname ORDER BY e.evtname) FROM pg_event_trigger e JOIN pg_depend d"
        " ON d.classid = 'pg_event_trigger'::regclass AND d.objid = e.oid AND d.deptype = 'e'"
        " JOIN pg_extension x ON x.oid = d.refobjid WHERE x.extname = 'pg_tviews'").fetchone()[0]
    assert members == ["pg_tviews_ddl_guard", "pg_tviews_drop_guard"]
    workload.setup(conn)
    with pytest.raises(GUARD, match="is read by TVIEW public.tv_post"):
        conn.execute("ALTER TABLE tb_post RENAME COLUMN title TO headline")
    conn.execute("DROP EXTENSION pg_tviews CASCADE")
    assert conn.execute("SELECT count(*) FROM pg_event_trigger").fetchone()[0] == 0
