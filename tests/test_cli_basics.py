"""The command line: help, usage errors, exit codes, JSON, quickstart end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import harness

EXE = [sys.executable, "-m", "pg_tviews"]


def run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("PG_TVIEWS_DSN", "DATABASE_URL", "PGHOST", "PGDATABASE")}
    full_env.update(env or {})
    return subprocess.run([*EXE, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300)


def test_help_lists_commands_with_descriptions():
    result = run("--help")
    assert result.returncode == 0
    for command in ("quickstart", "install", "server"):
        assert command in result.stdout


def test_unknown_option_is_a_usage_error():
    result = run("--no-such-option")
    assert result.returncode == 2
    assert "No such option" in result.stderr


def test_unreachable_dsn_is_one_line_and_exit_2():
    result = run("--dsn", "postgresql://x@127.0.0.1:1/nodb", "install")
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "127.0.0.1:1" in error_lines[0]
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback():
    result = run("--debug", "--dsn", "postgresql://x@127.0.0.1:1/nodb", "install")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_install_with_dsn_and_json(db):
    result = run("--json", "--dsn", db, "install")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["changed"] and report["mode"] == "schema"
    again = json.loads(run("--json", "--dsn", db, "install").stdout)
    assert not again["changed"] and again["version"] == report["version"]


def test_quickstart_twice_then_stop():
    workdir = harness.scratch_dir("pg_tviews-quickstart-")
    try:
        first = run("quickstart", cwd=workdir)  # the whole demo, benchmark included
        assert first.returncode == 0, first.stderr
        assert "initialized" in first.stdout and "psql 'postgresql://" in first.stdout
        for text in ("by Ada Lovelace, 6 comments", "public.tv_post", "health healthy",
                     "REFRESH MATERIALIZED VIEW", "update 1000 posts", "explore further", "status --watch"):
            assert text in first.stdout, first.stdout
        assert (workdir / ".pg_tviews" / "data" / "PG_VERSION").exists()
        second = run("--json", "quickstart", "--no-bench", cwd=workdir)
        assert second.returncode == 0, second.stderr
        report = json.loads(second.stdout)
        assert report["server"]["actions"] == ["reused"]
        assert not report["catalog"]["changed"]
        demo = report["demo"]
        assert demo["database"] == "pg_tviews_demo" and demo["bench"] is None
        assert demo["steps"][-1]["document"]["title"] == "Notes on the Analytical Engine"
        assert demo["status"]["health"]["healthy"]
        status = run("--json", "--dsn", demo["dsn"], "status")
        assert status.returncode == 0 and len(json.loads(status.stdout)["tviews"]) == 2
        stop = run("server", "stop", cwd=workdir)
        assert stop.returncode == 0 and "stopped" in stop.stdout
        status = json.loads(run("--json", "server", "status", cwd=workdir).stdout)
        assert status["running"] is False
    finally:
        run("server", "stop", cwd=workdir)
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("args", [["server", "url"]])
def test_url_of_stopped_server_is_refused(args, tmp_path):
    result = run("--data-dir", str(tmp_path / "none"), *args)
    assert result.returncode == 2 and "not running" in result.stderr
