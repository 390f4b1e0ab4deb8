"""`pg-tviews health`: findings with severities, attributed to TVIEWs; exit 1 on errors."""

from __future__ import annotations

import json

import pytest

import workload
from pg_tviews import worker
from pg_tviews.cli import main
from pg_tviews.errors import CheckFailed, UsageError
from pg_tviews.ops import health


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the command line in this process; returns (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def tview_id(conn, name: str) -> int:
    return conn.execute("SELECT id FROM tviews.entity WHERE table_name = %s", (name,)).fetchone()[0]


def test_healthy_database_passes(pg, tvconn, capsys):
    workload.setup(tvconn)
    tvconn.execute("CREATE INDEX ON tv_post (fk_user)")  # tv_feed's lineage looks posts up by author
    report = health.check(tvconn, sample=0)
    assert report.healthy and not report.problems
    drift = {f.tview: f.status for f in report.findings if f.component == "drift"}
    assert drift == {"public.tv_post": "ok", "public.tv_user": "ok", "public.tv_feed": "ok"}
    health.require_healthy(report, strict=True)

    code, out, err = cli(capsys, "--json", "--dsn", tvconn.info.dsn, "health", "--sample", "5")
    assert code == 0, err
    data = json.loads(out)
    assert data["healthy"] and data["sample"] == 5 and data["counts"]["error"] == 0
    assert {"catalog", "queue", "drift", "size"} <= {f["component"] for f in data["findings"]}


@pytest.mark.majors("newest")
def test_disabled_trigger_and_drift_are_errors_and_exit_1(pg, tvconn, capsys):
    workload.setup(tvconn)
    post = tview_id(tvconn, "tv_post")
    tvconn.execute(f"ALTER TABLE tb_like DISABLE TRIGGER pg_tviews_{post}_ins")
    tvconn.execute("INSERT INTO tb_like (fk_user, fk_post) VALUES (1, 1)")  # not seen by tv_post: drift
    report = health.check(tvconn, sample=0)
    errors = {(f.component, f.tview) for f in report.errors}
    assert errors == {("triggers", "public.tv_post"), ("drift", "public.tv_post")}
    with pytest.raises(CheckFailed):
        health.require_healthy(report)

    code, out, err = cli(capsys, "--dsn", tvconn.info.dsn, "health", "--sample", "0", "--problems")
    assert code == 1
    assert "pg_tviews_" in out and "differs from its definition" in out and "unhealthy" in out
    assert "health check failed: 2 errors" in err
    assert "matches its definition" not in out  # --problems hides info findings


@pytest.mark.majors("newest")
def test_warnings_fail_only_when_strict(pg, tvconn, capsys):
    tvconn.execute("CREATE TABLE tb_author (pk_author bigint PRIMARY KEY, name text)")
    tvconn.execute("CREATE TABLE tb_book (pk_book bigint PRIMARY KEY, fk_author bigint REFERENCES tb_author)")
    from pg_tviews import engine

    engine.create(tvconn, "tv_author", "SELECT a.pk_author, a.name, (SELECT count(*) FROM tb_book b"
                                       " WHERE b.fk_author = a.pk_author) AS books FROM tb_author a")
    report = health.check(tvconn)
    assert report.healthy
    assert [(f.component, f.tview) for f in report.warnings] == [("indexes", "public.tv_author")]
    assert "CREATE INDEX ON public.tb_book (fk_author)" in report.warnings[0].message
    with pytest.raises(CheckFailed):
        health.require_healthy(report, strict=True)
    assert cli(capsys, "--dsn", tvconn.info.dsn, "health")[0] == 0
    assert cli(capsys, "--dsn", tvconn.info.dsn, "health", "--strict")[0] == 1


@pytest.mark.majors("newest")
def test_bad_input_and_missing_catalog(pg, tvconn, conn, capsys):
    with pytest.raises(UsageError):
        health.check(tvconn, sample=-1)
    code, _out, err = cli(capsys, "--dsn", tvconn.info.dsn, "health", "--sample", "-3")
    assert code == 2 and "--sample" in err
    code, _out, err = cli(capsys, "--dsn", conn.info.dsn, "health")
    assert code == 2 and "not installed" in err


@pytest.mark.majors("newest")
def test_async_backlog_is_lag_not_drift(pg, tvconn):
    workload.setup(tvconn, "async")
    tvconn.execute("UPDATE tb_user SET name = 'renamed' WHERE pk_user = 1")
    report = health.check(tvconn, sample=0)
    assert report.healthy
    lag = [f for f in report.warnings if f.component == "drift"]
    assert {f.tview for f in lag} == {"public.tv_post", "public.tv_user"}
    assert all("async lag" in f.message for f in lag)
    worker.drain(tvconn)
    assert not [f for f in health.check(tvconn, sample=0).problems if f.component == "drift"]
