"""The statistics-overhead benchmark runs, and its variant without events writes none (no timings)."""

from __future__ import annotations

import psycopg
import pytest

from pg_tviews.bench import Scale
from pg_tviews.ops import overhead
from test_ops_health import cli


@pytest.mark.majors("newest")
def test_measure_compares_with_and_without_events(pg):
    report = overhead.measure(pg.dsn(), scale=Scale(users=20, posts=200, comments=400, prolific=5), iterations=20,
                              rounds=2, clients=2, seconds=0.3)
    with_events, without = report.results["with events"], report.results["without events"]
    assert len(with_events.latencies_ms) == len(without.latencies_ms) == 40
    assert with_events.transactions > 0 and without.transactions > 0
    warmup = 50
    # one event per committed write, and none from the variant without the insert
    assert report.events_rolled_up == warmup + 40 + with_events.transactions
    assert report.as_dict()["latency_overhead_ms"] == pytest.approx(with_events.median_ms - without.median_ms)
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        assert not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (overhead.DATABASE,)).fetchone()


@pytest.mark.majors("newest")
def test_cli(pg, capsys):
    code, out, err = cli(capsys, "--dsn", pg.dsn(), "metrics", "overhead", "--iterations", "10", "--rounds", "1",
                         "--clients", "0", "--scale", "0.001")
    assert code == 0, err
    assert "with events" in out and "without events" in out and "per write" in out
