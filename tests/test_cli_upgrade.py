"""The upgrade commands end to end, as an operator runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import harness
import workload
from oracle import assert_exact
from pg_tviews import catalog


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pg_tviews", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.mark.majors("newest")
def test_upgrade_lifecycle(pg, conn, tmp_path):
    catalog.install(conn, "0.1.0")
    workload.setup(conn, "immediate")
    dsn = pg.dsn(conn.info.dbname)
    scratch = harness.scratch_dir("pg_tviews-cli-upgrade-")

    check = cli("--json", "--dsn", dsn, "upgrade", "check", "--to", "0.2.0", "--report", str(tmp_path / "r.json"))
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["ok"] and (tmp_path / "r.json").exists()

    runbook = cli("--dsn", dsn, "upgrade", "plan", "--to", "0.2.0", "--format", "markdown")
    assert runbook.returncode == 0 and "# Runbook: pg_tviews 0.1.0 → 0.2.0" in runbook.stdout

    refused = cli("--dsn", dsn, "upgrade", "run", "--to", "0.2.0")
    assert refused.returncode == 2 and "--backup-dir" in refused.stderr

    run = cli("--json", "--dsn", dsn, "upgrade", "run", "--to", "0.2.0", "--backup-dir", str(scratch / "b1"))
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["result"] == "succeeded" and report["steps"] == ["pg_tviews--0.1.0--0.1.1.sql",
                                                                   "pg_tviews--0.1.1--0.2.0.sql"]
    assert (scratch / "b1" / "manifest.json").exists()
    assert cli("--dsn", dsn, "validate").returncode == 0

    history = json.loads(cli("--json", "--dsn", dsn, "upgrade", "history").stdout)
    assert [(h["from_version"], h["to_version"], h["result"]) for h in history] == [("0.1.0", "0.2.0", "succeeded")]

    back = cli("--json", "--dsn", dsn, "upgrade", "rollback")
    assert back.returncode == 0 and json.loads(back.stdout)["to_version"] == "0.1.0"
    assert catalog.installed(conn).version == "0.1.0"
    conn.execute("UPDATE tb_user SET name = 'after rollback' WHERE pk_user = 1")
    assert_exact(conn, *workload.TVIEWS)

    restore = cli("--json", "--dsn", dsn, "upgrade", "rollback", "--restore")
    assert restore.returncode == 0, restore.stderr
    pg.drop_database(json.loads(restore.stdout)["database"])

    scripts = cli("--dsn", dsn, "upgrade", "scripts", "--to", "0.1.1", "--out", str(tmp_path / "sql"))
    assert scripts.returncode == 0 and len(list((tmp_path / "sql").glob("*.sql"))) == 3


def test_scan_code_exit_code(tmp_path):
    (tmp_path / "q.sql").write_text("SELECT pg_tviews_refresh_batch('tv_post', ARRAY[1, 2]);\n")
    found = cli("scan-code", str(tmp_path))
    assert found.returncode == 1 and "q.sql:1:8: pg_tviews_refresh_batch" in found.stdout
    (tmp_path / "q.sql").write_text("SELECT pg_tviews_refresh('tv_post', ARRAY[1, 2]);\n")
    assert cli("scan-code", str(tmp_path)).returncode == 0


@pytest.mark.majors("newest")
def test_extension_install_and_extension_mode(pg, conn):
    installed = cli("--json", "extension", "install", "--pg-config", str(pg.cluster.binaries.tool("pg_config")))
    assert installed.returncode == 0, installed.stderr
    assert "pg_tviews.control" in json.loads(installed.stdout)["files"]
    dsn = pg.dsn(conn.info.dbname)
    done = cli("--json", "--dsn", dsn, "install", "--mode", "extension", "--version", "0.1.1")
    assert done.returncode == 0, done.stderr
    assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_tviews'").fetchone()[0] == "0.1.1"
    run = cli("--json", "--dsn", dsn, "upgrade", "run", "--to", "0.2.0", "--no-backup")
    assert run.returncode == 0, run.stderr
    assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_tviews'").fetchone()[0] == "0.2.0"
