"""Deterministic interleavings of several sessions, in the spirit of PostgreSQL's isolation tester.

Each Session runs its statements in order, in a thread of its own. `step()` queues one statement
and returns its outcome when it finished, or None as soon as the session waits for a lock (the
statement, or an earlier one of the same session, is blocked); later steps of other sessions may
unblock it. `finish()` waits for everything queued and returns the outcomes of blocked steps.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import psycopg

POLL = 0.005
#: a session waiting on a lock this long counts as blocked (tviews.contend polls with lock_timeout)
BLOCKED_AFTER = 0.4


@dataclass
class Outcome:
    sql: str
    ok: bool
    error: psycopg.Error | None = None
    rows: list | None = None

    @property
    def sqlstate(self) -> str | None:
        return self.error.sqlstate if self.error is not None else None


class Session:
    def __init__(self, dsn: str, observer: psycopg.Connection, name: str = ""):
        self.name = name
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.pid = self.conn.info.backend_pid
        self.observer = observer
        self._requests: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._queued = 0
        self._done: list[Outcome] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            sql = self._requests.get()
            if sql is None:
                return
            try:
                cur = self.conn.execute(sql)
                rows = cur.fetchall() if cur.description else None
                self._results.put(Outcome(sql, True, rows=rows))
            except psycopg.Error as exc:
                self._results.put(Outcome(sql, False, exc))

    def _waiting_on_lock(self) -> bool:
        row = self.observer.execute(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (self.pid,)
        ).fetchone()
        return bool(row and row[0])

    def _collect(self, timeout: float) -> bool:
        """Gather finished statements, waiting up to `timeout` for all; True when none is left."""
        deadline = time.monotonic() + timeout
        try:
            while self._queued:
                self._done.append(self._results.get(timeout=max(0.0, deadline - time.monotonic())))
                self._queued -= 1
        except queue.Empty:
            pass
        return self._queued == 0

    @property
    def busy(self) -> bool:
        self._collect(0)
        return self._queued > 0

    def step(self, sql: str, timeout: float = 60) -> Outcome | None:
        """Queue `sql`; its outcome when it completes promptly, None when the session is blocked."""
        self._requests.put(sql)
        self._queued += 1
        deadline = time.monotonic() + timeout
        blocked_since = None
        while time.monotonic() < deadline:
            if self._collect(POLL):
                return self._done[-1]
            if self._waiting_on_lock():
                blocked_since = blocked_since or time.monotonic()
                if time.monotonic() - blocked_since > BLOCKED_AFTER:
                    return None
            else:
                blocked_since = None
        raise TimeoutError(f"{self.name}: {sql!r} neither finished nor blocked within {timeout}s")

    def finish(self, timeout: float = 60) -> list[Outcome]:
        """Wait for all queued statements; every outcome of this session, in order."""
        if not self._collect(timeout):
            activity = self.observer.execute(
                "SELECT state, wait_event_type, wait_event, query FROM pg_stat_activity WHERE pid = %s", (self.pid,)
            ).fetchone()
            raise TimeoutError(f"{self.name}: statements still blocked after {timeout}s: {activity}")
        return list(self._done)

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(timeout=10)
        self.conn.close()
