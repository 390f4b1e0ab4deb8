"""Upgrade checks (each made to fail), plan and runbook, SQL scripts, code scan, script lint."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest
from pglast import ast, parse_sql

import harness
import workload
from pg_tviews import catalog
from pg_tviews.catalog import chain as chain_mod
from pg_tviews.upgrade import checks, plan, scan


def statuses(report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


@pytest.fixture
def old_catalog(conn):
    catalog.install(conn, "0.1.1")
    workload.setup(conn, "immediate")
    return conn


@pytest.mark.majors("newest")
def test_all_checks_pass_on_a_healthy_database(pg, old_catalog, tmp_path):
    report = checks.run_checks(old_catalog.info.dsn, "0.2.0")
    assert report.ok, [c for c in report.checks if c.status != "ok"]
    assert set(statuses(report)) == {"connection", "postgresql", "catalog", "extension_files", "consistency",
                                     "tview_errors", "queue", "prepared_transactions", "disk", "backup_tools",
                                     "resources"}
    path = checks.write_report(report, tmp_path / "report.json")
    assert '"ok": true' in Path(path).read_text()


@pytest.mark.majors("newest")
def test_each_check_can_fail(pg, old_catalog, connect, tmp_path):
    dsn = old_catalog.info.dsn
    assert statuses(checks.run_checks("postgresql://nobody@127.0.0.1:1/none"))["connection"] == "fail"
    assert statuses(checks.run_checks(dsn, limits=checks.Limits(supported_majors=(14,))))["postgresql"] == "fail"
    assert statuses(checks.run_checks(dsn, "9.9.9"))["catalog"] == "fail"
    assert statuses(checks.run_checks(dsn, limits=checks.Limits(disk_factor=1e12)))["disk"] == "fail"
    assert statuses(checks.run_checks(dsn, limits=checks.Limits(min_memory_bytes=2**60)))["resources"] == "fail"
    older = harness.available_majors().get(15)
    if older is not None and pg.major > 15:
        assert statuses(checks.run_checks(dsn, pg_dump_bindir=str(older.bindir)))["backup_tools"] == "fail"
    # a TVIEW that drifted
    old_catalog.execute("SET session_replication_role = replica")
    old_catalog.execute("UPDATE tb_user SET name = 'drift' WHERE pk_user = 1")
    old_catalog.execute("RESET session_replication_role")
    assert statuses(checks.run_checks(dsn, sample=0))["consistency"] == "fail"
    old_catalog.execute("SELECT tviews.pg_tviews_refresh_all('tv_user'), tviews.pg_tviews_refresh_all('tv_post'),"
                        " tviews.pg_tviews_refresh_all('tv_feed')")
    # a recorded error, a failed queue item, a prepared transaction
    old_catalog.execute("INSERT INTO tviews.refresh_event (entity_id, origin, rows_changed, duration_ms, error)"
                        " VALUES (1, 'worker', 0, 1, 'boom')")
    assert statuses(checks.run_checks(dsn))["tview_errors"] == "warn"
    old_catalog.execute("INSERT INTO tviews.queue (entity_id, keys, attempts, error_message) VALUES (1, '{1}', 99, 'bad')")
    assert statuses(checks.run_checks(dsn))["queue"] == "fail"
    other = connect(dsn)
    other.execute("BEGIN")
    other.execute("PREPARE TRANSACTION 'pg_tviews_check'")
    try:
        assert statuses(checks.run_checks(dsn))["prepared_transactions"] == "fail"
    finally:
        other.execute("ROLLBACK PREPARED 'pg_tviews_check'")


@pytest.mark.majors("newest")
def test_extension_files_check_fails_without_files(pg, conn):
    from pg_tviews.catalog import extension

    share = pg.cluster.binaries.sharedir()
    extension.install_files(share)
    catalog.install(conn, "0.1.1", mode="extension")
    assert statuses(checks.run_checks(conn.info.dsn, "0.2.0"))["extension_files"] == "ok"
    step = share / "extension" / "pg_tviews--0.1.1--0.2.0.sql"
    step.rename(step.with_suffix(".hidden"))
    try:
        assert statuses(checks.run_checks(conn.info.dsn, "0.2.0"))["extension_files"] == "fail"
    finally:
        step.with_suffix(".hidden").rename(step)


@pytest.mark.majors("newest")
def test_plan_and_runbook(pg, old_catalog):
    p = plan.plan(old_catalog, "0.2.0")
    assert (p.from_version, p.to_version, p.risk, p.rebuild) == ("0.1.1", "0.2.0", "minor", [])
    assert [s.script for s in p.steps] == ["pg_tviews--0.1.1--0.2.0.sql"]
    assert "tviews.tview" in p.steps[0].locks and "tviews.refresh_stat" in p.steps[0].locks
    assert {t["name"] for t in p.tviews} == {"public.tv_post", "public.tv_user", "public.tv_feed"}
    text = plan.runbook(p)
    for part in ("## 1. Preparation", "## 2. Execution", "## 3. Validation", "## 4. Rollback", "## 5. Handover",
                 "pg-tviews upgrade run --to 0.2.0", "public.tv_post"):
        assert part in text
    assert plan.risk_level("0.1.0", "0.1.1") == "patch" and plan.risk_level("0.2.0", "1.0.0") == "major"


@pytest.mark.majors("newest")
def test_sql_scripts_run_in_psql(pg, old_catalog, tmp_path):
    files = plan.write_scripts(old_catalog, "0.2.0", tmp_path / "scripts")
    psql = str(pg.cluster.binaries.tool("psql"))
    dsn = pg.dsn(old_catalog.info.dbname)
    outputs = [subprocess.run([psql, "-X", "-d", dsn, "-f", f], capture_output=True, text=True) for f in files]
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    assert catalog.installed(old_catalog).version == "0.2.0"
    assert "0.2.0" in outputs[2].stdout


def test_scan_code_finds_changed_api(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "jobs.py").write_text("x = 1\ncur.execute(\"SELECT pg_tviews_refresh_one('tv_post', 5)\")\n")
    (tmp_path / "app" / "fix.sql").write_text("SELECT tviews.pg_tviews_refresh_all('tv_user');\n")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "x.js").write_text("pg_tviews_refresh_batch")
    uses = scan.scan([str(tmp_path)])
    assert [(Path(u.file).name, u.line, u.name) for u in uses] == [
        ("fix.sql", 1, "pg_tviews_refresh_all"), ("jobs.py", 2, "pg_tviews_refresh_one")]
    assert "primary_keys" in uses[1].replacement


def test_migration_scripts_never_add_or_drop_catalog_columns():
    """attnum parity: a column added or dropped by ALTER TABLE makes an upgraded table differ from a
    fresh one; catalog tables are rebuilt instead."""
    for script in chain_mod.load().steps.values():
        for raw in parse_sql(script.sql):
            stmt = raw.stmt
            if isinstance(stmt, ast.AlterTableStmt):
                for cmd in stmt.cmds:
                    kind = cmd.subtype.name
                    assert kind not in ("AT_AddColumn", "AT_DropColumn"), (
                        f"{script.name}: ALTER TABLE {stmt.relation.relname} {kind}: rebuild the table instead")
