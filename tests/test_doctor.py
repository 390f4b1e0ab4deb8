"""`pg-tviews doctor [--repair]`: drift between the catalog and the installed objects, and its repair."""

from __future__ import annotations

import json

import psycopg
import pytest

import workload
from oracle import assert_exact
from pg_tviews import engine
from pg_tviews.errors import CheckFailed
from pg_tviews.ops import doctor
from test_ddl_guard import some_writes, tview_id
from test_ops_health import cli


def unguarded(conn: psycopg.Connection, *statements: str) -> None:
    """DDL with the guard turned off, as an operator who insists would run it."""
    with conn.transaction():
        conn.execute("SET LOCAL pg_tviews.ddl_guard = off")
        for statement in statements:
            conn.execute(statement)


def checks(findings: list[doctor.Finding]) -> set[tuple[str, str | None]]:
    return {(f.check, f.tview) for f in findings}


def test_a_healthy_database_has_no_findings(pg, tvconn, capsys):
    workload.setup(tvconn)
    report = doctor.doctor(tvconn)
    assert report.ok and report.findings == []
    code, out, _err = cli(capsys, "--dsn", tvconn.info.dsn, "doctor")
    assert code == 0 and "agree" in out


def test_renamed_sources_are_found_and_followed(pg, tvconn):
    workload.setup(tvconn)
    unguarded(tvconn, "ALTER TABLE tb_user RENAME COLUMN name TO full_name",
              "ALTER TABLE tb_comment RENAME TO tb_remark")
    with pytest.raises(psycopg.Error):  # what the guard prevents: the stale triggers fail writes
        tvconn.execute("UPDATE tb_user SET full_name = 'x' WHERE pk_user = 1")
    report = doctor.doctor(tvconn)
    assert checks(report.findings) == {("definition", "public.tv_post"), ("definition", "public.tv_user")}
    finding = report.findings[0]
    assert "no longer resolves" in finding.problem and "doctor --repair" in finding.fix

    report = doctor.doctor(tvconn, repair=True)
    assert report.ok and report.remaining == []
    assert any("current names" in a and "tv_post" in a for a in report.actions)
    definition = tvconn.execute("SELECT definition FROM tviews.entity WHERE table_name = 'tv_post'").fetchone()[0]
    assert "full_name" in definition and "tb_remark" in definition
    assert {r[0] for r in tvconn.execute(
        "SELECT s.table_name FROM tviews.entity_source s JOIN tviews.entity e ON e.id = s.entity_id"
        " WHERE e.table_name = 'tv_post'")} == {"tb_post", "tb_user", "tb_like", "tb_remark"}
    tvconn.execute("UPDATE tb_user SET full_name = 'renamed' WHERE pk_user = 2")
    tvconn.execute("INSERT INTO tb_remark (pk_comment, fk_post, fk_user, body) VALUES (1000, 1, 2, 'hi')")
    tvconn.execute("DELETE FROM tb_remark WHERE pk_comment = 3")
    tvconn.execute("INSERT INTO tb_post (pk_post, fk_user, title) VALUES (100, 2, 'new')")
    assert_exact(tvconn, *workload.TVIEWS)
    # the guard protects the new names now
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        tvconn.execute("ALTER TABLE tb_user RENAME COLUMN full_name TO name")


def test_dropped_and_disabled_objects_are_rebuilt_and_missed_writes_recomputed(pg, tvconn, capsys):
    workload.setup(tvconn)
    post, feed = tview_id(tvconn, "tv_post"), tview_id(tvconn, "tv_feed")
    tvconn.execute(f"ALTER TABLE tb_post DISABLE TRIGGER pg_tviews_{post}_ins")  # allowed: an operator's tool
    unguarded(tvconn, f'DROP TRIGGER "pg_tviews_{post}_upd" ON tb_user')
    tvconn.execute("INSERT INTO tb_post (pk_post, fk_user, title) VALUES (200, 1, 'missed')")
    tvconn.execute("UPDATE tb_user SET name = 'missed too' WHERE pk_user = 3")
    # without these, writes to tv_post's sources fail: tv_feed's triggers on it call them
    unguarded(tvconn, f"DROP FUNCTION tviews.tv{feed}_apply(bigint[])", f"DROP VIEW tviews.tv{feed}_def")

    findings = doctor.diagnose(tvconn)
    assert checks(findings) == {("triggers", "public.tv_post"), ("functions", "public.tv_feed"),
                                ("view", "public.tv_feed")}
    assert any("disabled" in f.problem and f"pg_tviews_{post}_ins" in f.problem for f in findings)
    assert any("missing" in f.problem and f"pg_tviews_{post}_upd" in f.problem for f in findings)
    code, out, err = cli(capsys, "--json", "--dsn", tvconn.info.dsn, "doctor")
    assert code == 1 and "doctor --repair" in err
    assert len(json.loads(out)["findings"]) == len(findings)

    code, out, _err = cli(capsys, "--json", "--dsn", tvconn.info.dsn, "doctor", "--repair")
    data = json.loads(out)
    assert code == 0 and data["ok"] and data["remaining"] == []
    assert any("rows recomputed" in a and "tv_post" in a for a in data["actions"])
    assert_exact(tvconn, *workload.TVIEWS)
    some_writes(tvconn)


def test_a_missing_table_is_created_again(pg, tvconn):
    workload.setup(tvconn)
    unguarded(tvconn, "DROP TABLE tv_feed")
    assert checks(doctor.diagnose(tvconn)) == {("table", "public.tv_feed")}
    report = doctor.doctor(tvconn, repair=True)
    assert report.ok
    some_writes(tvconn)


def test_what_cannot_be_repaired_is_reported_and_fails(pg, tvconn, capsys):
    workload.setup(tvconn)
    unguarded(tvconn, "ALTER TABLE tv_feed ADD COLUMN note text")
    report = doctor.doctor(tvconn, repair=True)
    assert checks(report.remaining) == {("table", "public.tv_feed")}
    assert "pg-tviews drop" in report.remaining[0].fix
    with pytest.raises(CheckFailed, match="remain after the repair"):
        doctor.require_healthy(report)
    code, _out, err = cli(capsys, "--dsn", tvconn.info.dsn, "doctor", "--repair")
    assert code == 1 and "pg-tviews drop" in err


def test_a_missing_or_disabled_guard_is_reinstalled(pg, tvconn):
    workload.setup(tvconn)
    tvconn.execute("DROP EVENT TRIGGER pg_tviews_ddl_guard")
    tvconn.execute("ALTER EVENT TRIGGER pg_tviews_drop_guard DISABLE")
    [finding] = doctor.diagnose(tvconn)
    assert finding.check == "guard" and "pg_tviews_ddl_guard" in finding.problem and finding.tview is None
    tvconn.execute("ALTER TABLE tb_user RENAME COLUMN name TO full_name")  # nothing refuses it now
    tvconn.execute("ALTER TABLE tb_user RENAME COLUMN full_name TO name")
    report = doctor.doctor(tvconn, repair=True)
    assert report.ok and "DDL guard installed and enabled" in report.actions
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        tvconn.execute("ALTER TABLE tb_user RENAME COLUMN name TO full_name")
    assert_exact(tvconn, *workload.TVIEWS)


def test_a_failing_repair_is_reported_and_the_rest_repaired(pg, tvconn):
    workload.setup(tvconn)
    post = tview_id(tvconn, "tv_post")
    tvconn.execute("CREATE SCHEMA side")
    engine.create(tvconn, "side.tv_name", "SELECT u.pk_user, u.name FROM tb_user u")
    unguarded(tvconn, "DROP SCHEMA side CASCADE")  # its TVIEW table and nothing else
    tvconn.execute(f"ALTER TABLE tb_post DISABLE TRIGGER pg_tviews_{post}_ins")
    tvconn.execute("INSERT INTO tb_post (pk_post, fk_user, title) VALUES (200, 1, 'missed')")
    report = doctor.doctor(tvconn, repair=True)
    assert any(a.startswith("side.tv_name: not repaired: schema") for a in report.actions), report.actions
    assert checks(report.remaining) == {("table", "side.tv_name")}
    assert_exact(tvconn, *workload.TVIEWS)
