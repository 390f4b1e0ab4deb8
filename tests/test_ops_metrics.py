"""Prometheus metrics: served over HTTP, parsed with prometheus_client's own parser."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

import workload
from pg_tviews import worker
from pg_tviews.ops import metrics
from test_cli_basics import EXE
from test_ops_health import cli


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """Samples by name, each keyed by its sorted label pairs."""
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return samples(text)


def samples(text: str) -> dict[str, dict[tuple, float]]:
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def one(found: dict, name: str, **labels: str) -> float:
    return found[name][tuple(sorted(labels.items()))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_scrape_reports_stats_queue_and_health(pg, tvconn):
    workload.setup(tvconn, "async")
    dsn = tvconn.info.dsn
    tvconn.execute("UPDATE tb_user SET name = 'renamed' WHERE pk_user = 1")
    collector = metrics.TViewsCollector(lambda: psycopg.connect(dsn, autocommit=True), health_interval=0)
    server, thread = metrics.serve(collector, host="127.0.0.1", port=0)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        found = scrape(url)
        assert one(found, "pg_tviews_up") == 1
        assert one(found, "pg_tviews_tview_info", tview="public.tv_post", mode="async", rank="1") == 1
        assert one(found, "pg_tviews_pending_changes", tview="public.tv_post") == 1
        assert one(found, "pg_tviews_queue_items", state="pending") == 2
        assert one(found, "pg_tviews_rows", tview="public.tv_post") == 30
        assert one(found, "pg_tviews_size_bytes", tview="public.tv_post") > 0
        assert one(found, "pg_tviews_healthy") == 1  # the backlog is lag, not drift
        assert one(found, "pg_tviews_health_findings", component="drift", severity="warning") == 2

        worker.drain(tvconn)
        found = scrape(url)
        refreshes = one(found, "pg_tviews_refreshes_total", tview="public.tv_post")
        assert refreshes >= 1 and one(found, "pg_tviews_rows_changed_total", tview="public.tv_post") >= 3
        assert one(found, "pg_tviews_refresh_seconds_total", tview="public.tv_post") > 0
        assert one(found, "pg_tviews_last_refresh_timestamp_seconds", tview="public.tv_post") > time.time() - 600
        assert one(found, "pg_tviews_queue_items", state="pending") == 0
        assert one(found, "pg_tviews_drift_detected", tview="public.tv_post") == 0
        assert tvconn.execute("SELECT count(*) FROM tviews.refresh_event").fetchone()[0] == 0  # rolled up

        tvconn.execute("SET session_replication_role = replica")
        tvconn.execute("UPDATE tb_post SET title = 'unseen' WHERE pk_post = 1")
        tvconn.execute("RESET session_replication_role")
        found = scrape(url)
        assert one(found, "pg_tviews_healthy") == 0
        assert one(found, "pg_tviews_drift_detected", tview="public.tv_post") == 1
        assert one(found, "pg_tviews_refreshes_total", tview="public.tv_post") == refreshes  # counters hold
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.mark.majors("newest")
def test_unreachable_database_is_up_0(pg):
    collector = metrics.TViewsCollector(lambda: psycopg.connect("postgresql://x@127.0.0.1:1/none", connect_timeout=2))
    found = samples(metrics.exposition(collector))
    assert one(found, "pg_tviews_up") == 0 and "pg_tviews_refreshes_total" not in found
    assert collector.last_error


@pytest.mark.majors("newest")
def test_cli_serve_until_sigterm_and_show(pg, tvconn, capsys):
    workload.setup(tvconn)
    port = free_port()
    proc = subprocess.Popen([*EXE, "--dsn", tvconn.info.dsn, "metrics", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--no-health"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline, found = time.monotonic() + 60, None
        while found is None and time.monotonic() < deadline:
            try:
                found = scrape(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                time.sleep(0.1)
        assert found is not None, proc.stderr.read() if proc.poll() is not None else "no answer"
        assert one(found, "pg_tviews_up") == 1 and "pg_tviews_healthy" not in found
        assert one(found, "pg_tviews_rows", tview="public.tv_feed") == 30
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/metrics" in out

    code, out, err = cli(capsys, "--dsn", tvconn.info.dsn, "metrics", "show")
    assert code == 0, err
    assert one(samples(out), "pg_tviews_healthy") == 1


@pytest.mark.majors("newest")
def test_cli_refuses_a_database_without_catalog_and_a_busy_port(pg, tvconn, conn, capsys):
    code, _out, err = cli(capsys, "--dsn", conn.info.dsn, "metrics", "serve", "--port", str(free_port()))
    assert code == 2 and "not installed" in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, _out, err = cli(capsys, "--dsn", tvconn.info.dsn, "metrics", "serve", "--host", "127.0.0.1",
                              "--port", str(busy.getsockname()[1]))
    assert code == 2 and "cannot listen" in err
