"""Prometheus metrics of TVIEWs: refresh statistics, sizes, the async queue and health.

A custom collector reads the database at each scrape (one short connection), so the exporter
holds no state that could disagree with the database. The health check, which compares sampled
rows with the definitions, is cached for `health_interval` seconds. By default each scrape also
rolls refresh events up (tviews.pg_tviews_stats_rollup()), which keeps the event table small
when no worker runs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import psycopg
from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from ..errors import TViewError
from . import health, stats, status

DEFAULT_PORT = 9188
DEFAULT_HEALTH_INTERVAL = 60.0

Connect = Callable[[], psycopg.Connection]


class TViewsCollector:
    """Collects pg_tviews_* metrics from the database on every scrape."""

    def __init__(
        self,
        connect: Connect,
        *,
        health_sample: int | None = health.DEFAULT_SAMPLE,
        health_interval: float = DEFAULT_HEALTH_INTERVAL,
        fold: bool = True,
    ):
        self._connect = connect
        self.health_sample = health_sample
        self.health_interval = health_interval
        self.fold = fold
        self.last_error: str | None = None
        self._health: health.HealthReport | None = None
        self._health_at = 0.0  # time.time() of the cached health report
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return []  # families depend on the database; registration must not connect

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            with self._connect() as conn:
                families = self._families(conn)
            up, self.last_error = 1.0, None
        except (psycopg.Error, TViewError) as exc:
            families, up, self.last_error = [], 0.0, str(exc).strip()
        yield from families
        yield GaugeMetricFamily("pg_tviews_up", "1 when the last scrape could read the pg_tviews catalog", value=up)
        yield GaugeMetricFamily("pg_tviews_scrape_duration_seconds", "Time the last scrape took",
                                value=time.perf_counter() - started)

    def _health_report(self, conn: psycopg.Connection) -> health.HealthReport | None:
        """The health report, recomputed at most every `health_interval` seconds."""
        if self.health_sample is None:
            return None
        with self._lock:
            if self._health is None or time.time() - self._health_at >= self.health_interval:
                self._health = health.check(conn, self.health_sample)
                self._health_at = time.time()
            return self._health

    def _families(self, conn: psycopg.Connection) -> list[Metric]:
        if self.fold:
            stats.rollup(conn)
        report = status.collect(conn, health_sample=None)
        families = _tview_families(report) + _queue_families(report)
        checked = self._health_report(conn)
        if checked is not None:
            families += _health_families(checked, self._health_at)
        return families


def _tview_families(report: status.StatusReport) -> list[Metric]:
    """Per-TVIEW counters (since the catalog was installed) and gauges."""
    labels = ["tview"]
    info = GaugeMetricFamily("pg_tviews_tview_info", "One series per TVIEW, with its refresh mode and rank",
                             labels=["tview", "mode", "rank"])
    refreshes = CounterMetricFamily("pg_tviews_refreshes", "Refreshes of the TVIEW (transactions, "
                                    "explicit refreshes, worker rounds)", labels=labels)
    rows_changed = CounterMetricFamily("pg_tviews_rows_changed", "TVIEW rows written by refreshes", labels=labels)
    seconds = CounterMetricFamily("pg_tviews_refresh_seconds", "Time spent refreshing the TVIEW", labels=labels)
    errors = CounterMetricFamily("pg_tviews_refresh_errors", "Refreshes that failed (worker)", labels=labels)
    last = GaugeMetricFamily("pg_tviews_last_refresh_timestamp_seconds", "When the TVIEW was last refreshed",
                             labels=labels)
    last_duration = GaugeMetricFamily("pg_tviews_last_refresh_duration_seconds", "Duration of the last refresh",
                                      labels=labels)
    last_error = GaugeMetricFamily("pg_tviews_last_error_timestamp_seconds", "When a refresh last failed",
                                   labels=labels)
    rows = GaugeMetricFamily("pg_tviews_rows", "Rows of the TVIEW table (estimated for large tables)", labels=labels)
    size = GaugeMetricFamily("pg_tviews_size_bytes", "Size of the TVIEW table with its indexes", labels=labels)
    pending = GaugeMetricFamily("pg_tviews_pending_changes", "Queued changes not applied yet (async mode)",
                                labels=labels)
    lag = GaugeMetricFamily("pg_tviews_oldest_pending_age_seconds", "Age of the oldest queued change not "
                            "applied yet (0 when none)", labels=labels)
    for t in report.tviews:
        name = [t.tview]
        info.add_metric([t.tview, t.mode, str(t.rank)], 1)
        refreshes.add_metric(name, t.refresh_count)
        rows_changed.add_metric(name, t.rows_changed)
        seconds.add_metric(name, t.total_ms / 1000)
        errors.add_metric(name, t.error_count)
        if t.last_refreshed is not None:
            last.add_metric(name, t.last_refreshed.timestamp())
        if t.last_refresh_duration_ms is not None:
            last_duration.add_metric(name, t.last_refresh_duration_ms / 1000)
        if t.last_error_at is not None:
            last_error.add_metric(name, t.last_error_at.timestamp())
        if t.rows is not None:
            rows.add_metric(name, t.rows)
        if t.size_bytes is not None:
            size.add_metric(name, t.size_bytes)
        pending.add_metric(name, t.pending)
        lag.add_metric(name, t.oldest_pending_age_s or 0.0)
    return [info, refreshes, rows_changed, seconds, errors, last, last_duration, last_error, rows, size, pending, lag]


def _queue_families(report: status.StatusReport) -> list[Metric]:
    queue = report.queue
    items = GaugeMetricFamily("pg_tviews_queue_items", "Items of the async queue by state", labels=["state"])
    for state, value in (("pending", queue.pending), ("failed", queue.failed), ("processed", queue.processed)):
        items.add_metric([state], value)
    oldest = GaugeMetricFamily("pg_tviews_queue_oldest_pending_age_seconds",
                               "Age of the oldest unprocessed queue item (0 when none)",
                               value=queue.oldest_pending_age_s or 0.0)
    return [items, oldest]


def _health_families(report: health.HealthReport, checked_at: float) -> list[Metric]:
    healthy = GaugeMetricFamily("pg_tviews_healthy", "1 when the health check found no error",
                                value=1.0 if report.healthy else 0.0)
    findings = GaugeMetricFamily("pg_tviews_health_findings", "Findings of the health check by component and "
                                 "severity", labels=["component", "severity"])
    for (component, severity), n in sorted(Counter((f.component, f.severity) for f in report.findings).items()):
        findings.add_metric([component, severity], n)
    drifted = GaugeMetricFamily("pg_tviews_drift_detected", "1 when the sampled comparison of the TVIEW with its "
                                "definition found differences", labels=["tview"])
    for finding in report.findings:
        if finding.component == "drift" and finding.tview is not None:
            drifted.add_metric([finding.tview], 1.0 if finding.severity == "error" else 0.0)
    at = GaugeMetricFamily("pg_tviews_health_check_timestamp_seconds", "When the reported health check ran",
                           value=checked_at)
    return [healthy, findings, drifted, at]


def registry(collector: TViewsCollector) -> CollectorRegistry:
    """A registry holding only the pg_tviews collector (no process metrics of the exporter)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg


def exposition(collector: TViewsCollector) -> str:
    """The metrics in the Prometheus text format, as one scrape would return them."""
    return generate_latest(registry(collector)).decode()


def serve(collector: TViewsCollector, *, host: str = "0.0.0.0", port: int = DEFAULT_PORT):
    """Serve /metrics over HTTP from a background thread; returns (server, thread).

    Port 0 picks a free port (server.server_port). Stop with server.shutdown().
    """
    return start_http_server(port, addr=host, registry=registry(collector))
