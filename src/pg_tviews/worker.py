"""The async worker: applies queued changes of async TVIEWs after their writers commit.

Each round is one transaction (tviews.pg_tviews_process_queue): items are claimed with SKIP
LOCKED, so several workers can run side by side. Failures are retried with exponential backoff and
kept with their error after the last attempt; since catalog 0.2.3 an item that fails does not fail
the others of its round. A stop request (SIGTERM, SIGINT) lets the current round finish.

Batches grow while a backlog lasts (see Batch).

Waking up: PostgreSQL serializes the commits of all transactions that NOTIFY, so writers notify
only a worker that is waiting for work. Before it waits, a worker takes the session advisory lock
(tviews.lock_class(), 0) and looks at the queue once more; a writer that finds the lock free does
not notify but holds it shared until its transaction ends (tviews.enqueue). So a worker cannot
start waiting while a change that did not notify is still uncommitted, and every change is either
notified or seen by the last look. While writers that did not notify are in flight, the worker
polls at growing intervals instead. It also polls every `poll_interval` while waiting, so a lost
connection or an older catalog (0.2.0 notifies on every write) only delays work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from . import catalog
from .catalog.chain import version_key

CHANNEL = "pg_tviews_queue"
#: the advisory lock a worker holds while it waits for a notification (see tviews.enqueue)
IDLE_LOCK = "tviews.lock_class(), 0"
#: first pause between rounds while the idle lock cannot be taken; doubles up to the poll interval
FIRST_PAUSE = 0.01
#: how far a round's batch grows while the queue has a backlog, as a multiple of the batch asked for
BATCH_GROWTH = 16
#: the first catalog whose rounds do not fail with one of their items (tviews.apply_queued)
ISOLATES_FAILURES = (0, 2, 3)


class Batch:
    """Queue items claimed per round. While rounds come back full (a backlog), the batch doubles,
    up to BATCH_GROWTH times the size asked for: the items of a backlog often recompute the same
    rows (every post of a renamed user), and one larger round recomputes them once for all its
    items. A round that is not full brings the batch back. Batches grow only on a catalog whose
    rounds isolate failing items, so that a larger round does not fail more changes; a grown round
    that a statement timeout cancels is done again at the size asked for."""

    def __init__(self, size: int, *, grows: bool = True):
        self.asked = size
        self.size = size
        self.grows = grows

    def after(self, handled: int) -> None:
        full = handled >= self.size
        self.size = min(self.size * 2, self.asked * BATCH_GROWTH) if full and self.grows else self.asked

    def next_round(self, conn: psycopg.Connection) -> int:
        """One round at the current size. A grown round cancelled by a statement timeout (which
        cancels the round as a whole) is done again at the size asked for."""
        try:
            handled = process_once(conn, self.size)
        except psycopg.errors.QueryCanceled:
            if self.size == self.asked:
                raise
            self.size = self.asked
            handled = process_once(conn, self.size)
        self.after(handled)
        return handled


@dataclass
class QueueStatus:
    pending: int
    failed: int
    processed: int
    oldest_pending_age_s: float | None
    per_tview: list[dict]

    def as_dict(self) -> dict:
        return self.__dict__


@dataclass
class WorkerStats:
    rounds: int = 0
    items: int = 0
    wakeups: int = 0


def process_once(conn: psycopg.Connection, batch: int = 500) -> int:
    """One round: apply up to `batch` queued items (and pending repairs)."""
    with conn.transaction():
        return conn.execute("SELECT tviews.pg_tviews_process_queue(%s)", (batch,)).fetchone()[0]


def drain(conn: psycopg.Connection, batch: int = 500) -> int:
    """Apply everything that is pending now; returns the number of items handled."""
    total = 0
    size = Batch(batch, grows=isolates_failures(conn))
    while True:
        handled = size.next_round(conn)
        total += handled
        if handled == 0:
            return total


def isolates_failures(conn: psycopg.Connection) -> bool:
    """Whether the catalog applies a failing round's items apart (see Batch)."""
    with conn.transaction():
        version = catalog.installed(conn).version
    return version is not None and version_key(version) >= ISOLATES_FAILURES


def status(conn: psycopg.Connection) -> QueueStatus:
    pending, failed, processed, oldest = conn.execute(
        "SELECT count(*) FILTER (WHERE processed_at IS NULL AND NOT failed),"
        "       count(*) FILTER (WHERE failed),"
        "       count(*) FILTER (WHERE processed_at IS NOT NULL),"
        "       extract(epoch FROM clock_timestamp() - min(created_at) FILTER (WHERE processed_at IS NULL))"
        "  FROM tviews.pg_tviews_queue"
    ).fetchone()
    per = [
        {"tview": tview, "pending": p, "failed": f, "last_error": err}
        for tview, p, f, err in conn.execute(
            "SELECT tview, count(*) FILTER (WHERE processed_at IS NULL AND NOT failed),"
            "       count(*) FILTER (WHERE failed),"
            "       (array_agg(error_message ORDER BY id DESC) FILTER (WHERE error_message IS NOT NULL))[1]"
            "  FROM tviews.pg_tviews_queue GROUP BY tview ORDER BY tview"
        )
    ]
    return QueueStatus(pending, failed, processed, float(oldest) if oldest is not None else None, per)


def run(
    connect: Callable[[], psycopg.Connection],
    *,
    stop: threading.Event,
    batch: int = 500,
    poll_interval: float = 1.0,
    housekeeping_interval: float = 60.0,
    on_round: Callable[[int], None] = lambda handled: None,
) -> WorkerStats:
    """Run until `stop` is set; reconnects after a lost connection."""
    stats = WorkerStats()
    last_housekeeping = 0.0
    size = Batch(batch)

    def round_(conn: psycopg.Connection) -> int:
        nonlocal last_housekeeping
        handled = size.next_round(conn)
        stats.rounds += 1
        stats.items += handled
        on_round(handled)
        if time.monotonic() - last_housekeeping > housekeeping_interval:
            conn.execute("SELECT tviews.pg_tviews_stats_rollup(), tviews.pg_tviews_queue_cleanup()")
            last_housekeeping = time.monotonic()
        return handled

    while not stop.is_set():
        try:
            with connect() as conn:
                conn.autocommit = True
                size.grows = isolates_failures(conn)
                conn.execute(f"LISTEN {CHANNEL}")
                pause = FIRST_PAUSE
                while not stop.is_set():
                    if round_(conn):
                        pause = FIRST_PAUSE
                        continue  # more may be waiting, or cascaded from what was just applied
                    if not conn.execute(f"SELECT pg_try_advisory_lock({IDLE_LOCK})").fetchone()[0]:
                        # writers that did not notify are still running (or another worker waits)
                        stop.wait(pause)
                        pause = min(pause * 2, poll_interval)
                        continue
                    try:
                        if round_(conn):  # the last look: committed before the lock was free
                            continue
                        if _wait_for_notification(conn, poll_interval, stop):
                            stats.wakeups += 1
                    finally:
                        conn.execute(f"SELECT pg_advisory_unlock({IDLE_LOCK})")
                    pause = FIRST_PAUSE
        except psycopg.OperationalError:
            if stop.wait(poll_interval):
                break
    return stats


def _wait_for_notification(conn: psycopg.Connection, timeout: float, stop: threading.Event) -> bool:
    """Wait up to `timeout` for a notification, in short slices so that a stop request is seen."""
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        for _notify in conn.notifies(timeout=min(remaining, 0.25), stop_after=1):
            return True
    return False
