"""`pg-tviews status [--watch]`: TVIEWs, queue and health on one screen."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

import workload
from pg_tviews import worker
from pg_tviews.ops import status
from test_cli_basics import EXE
from test_ops_health import cli


def test_status_of_every_tview_with_queue_backlog(pg, tvconn, capsys):
    workload.setup(tvconn, "async")
    tvconn.execute("UPDATE tb_user SET name = 'renamed' WHERE pk_user = 1")
    report = status.collect(tvconn)
    by_name = {t.tview: t for t in report.tviews}
    assert list(by_name) == ["public.tv_post", "public.tv_user", "public.tv_feed"]  # dependency order
    post = by_name["public.tv_post"]
    assert post.mode == "async" and post.rows == 30 and not post.rows_estimated and post.size_bytes > 0
    assert post.pending == 1 and not post.current and post.oldest_pending_age_s >= 0
    assert report.queue.pending == 2  # tv_post and tv_user each queued the rename
    assert report.health is not None and report.health.healthy

    code, out, err = cli(capsys, "--dsn", tvconn.info.dsn, "status")
    assert code == 0, err
    for text in ("public.tv_post", "public.tv_feed", "pending", "queue pending 2", "health healthy"):
        assert text in out, out

    worker.drain(tvconn)
    report = status.collect(tvconn, health_sample=None)
    assert all(t.current and t.refresh_count > 0 for t in report.tviews) and report.health is None
    code, out, _err = cli(capsys, "--json", "--dsn", tvconn.info.dsn, "status", "--no-health")
    data = json.loads(out)
    assert data["health"] is None and data["queue"]["pending"] == 0
    assert {t["tview"]: t["current"] for t in data["tviews"]} == dict.fromkeys(
        ["public.tv_post", "public.tv_user", "public.tv_feed"], True)


@pytest.mark.majors("newest")
def test_failed_items_show_in_queue_and_health(pg, tvconn, capsys):
    workload.setup(tvconn, "async")
    tvconn.execute("UPDATE tb_post SET title = 'x' WHERE pk_post = 1")
    tvconn.execute("UPDATE tviews.queue SET attempts = tviews.queue_max_attempts(), error_message = 'gave up'")
    report = status.collect(tvconn)
    assert report.queue.failed >= 1 and not report.health.healthy
    code, out, _err = cli(capsys, "--dsn", tvconn.info.dsn, "status")
    assert code == 0  # a screen, not a check: `pg-tviews health` is the one that fails
    assert "unhealthy" in out and "failed permanently" in out


@pytest.mark.majors("newest")
def test_watch_redraws_until_interrupted(pg, tvconn, capsys):
    workload.setup(tvconn)
    proc = subprocess.Popen([*EXE, "--dsn", tvconn.info.dsn, "status", "--watch", "--interval", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen, deadline = "", time.monotonic() + 60
        while seen.count("queue pending") < 3 and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        assert seen.count("queue pending") >= 3, seen
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in out

    code, _out, err = cli(capsys, "--json", "--dsn", tvconn.info.dsn, "status", "--watch")
    assert code == 2 and "--watch" in err
