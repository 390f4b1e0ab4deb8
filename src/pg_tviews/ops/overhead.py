"""What refresh statistics cost writers: write latency and throughput with and without the
refresh-event insert of the commit step.

Runs in a scratch database (blog schema, tv_post in immediate mode). The variant without
statistics is the same catalog with the `INSERT INTO tviews.refresh_event` statement removed from
tviews.tx_commit(); both variants alternate round by round, so drift of the machine (caches,
autovacuum, other load) affects them alike.
"""

from __future__ import annotations

import random
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from .. import catalog, engine
from ..bench import Scale
from ..bench.blog import SCHEMA_SQL, TV_POST_SQL, load_data
from ..errors import CatalogError, UsageError

DATABASE = "pg_tviews_stats_overhead"
VARIANTS = ("with events", "without events")
WRITE = "UPDATE tb_post SET title = %s WHERE pk_post = %s"
EVENT_INSERT = re.compile(r"\s*INSERT INTO tviews\.refresh_event\b.*?;", re.DOTALL)


@dataclass
class VariantResult:
    variant: str
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    transactions: int = 0  # committed by the concurrent clients
    seconds: float = 0.0  # they ran

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]

    @property
    def throughput(self) -> float:
        return self.transactions / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {"variant": self.variant, "writes": len(self.latencies_ms), "median_ms": self.median_ms,
                "p95_ms": self.p95_ms, "transactions": self.transactions, "throughput_tps": self.throughput}


@dataclass
class OverheadReport:
    server_version: str
    scale: Scale
    iterations: int
    rounds: int
    clients: int
    results: dict[str, VariantResult]
    events_rolled_up: int
    rollup_ms: float

    @property
    def latency_overhead_ms(self) -> float:
        return self.results[VARIANTS[0]].median_ms - self.results[VARIANTS[1]].median_ms

    @property
    def throughput_change(self) -> float | None:
        """Relative change of concurrent throughput caused by the events (negative: slower)."""
        base = self.results[VARIANTS[1]].throughput
        return self.results[VARIANTS[0]].throughput / base - 1 if base else None

    def as_dict(self) -> dict:
        return {
            "server_version": self.server_version, "scale": asdict(self.scale), "iterations": self.iterations,
            "rounds": self.rounds, "clients": self.clients,
            "results": [r.as_dict() for r in self.results.values()],
            "latency_overhead_ms": self.latency_overhead_ms, "throughput_change": self.throughput_change,
            "events_rolled_up": self.events_rolled_up, "rollup_ms": self.rollup_ms,
        }


def _commit_step_without_events(conn: psycopg.Connection) -> str:
    """CREATE OR REPLACE text of tviews.tx_commit() minus its refresh-event insert."""
    definition = conn.execute("SELECT pg_get_functiondef('tviews.tx_commit()'::regprocedure)").fetchone()[0]
    stripped, found = EVENT_INSERT.subn("", definition)
    if found != 1:
        raise CatalogError(f"expected one refresh-event insert in tviews.tx_commit(), found {found}",
                           hint="the catalog changed: update pg_tviews.ops.overhead to match it")
    return stripped


def _setup(conn: psycopg.Connection, scale: Scale) -> dict[str, str]:
    """Blog schema, data and tv_post; returns the commit step's source text per variant."""
    conn.execute(SCHEMA_SQL)
    load_data(conn, **asdict(scale))
    catalog.install(conn)
    engine.create(conn, "tv_post", TV_POST_SQL)
    conn.execute("VACUUM ANALYZE")
    original = conn.execute("SELECT pg_get_functiondef('tviews.tx_commit()'::regprocedure)").fetchone()[0]
    return {VARIANTS[0]: original, VARIANTS[1]: _commit_step_without_events(conn)}


def _latencies(conn: psycopg.Connection, rng: random.Random, scale: Scale, n: int) -> list[float]:
    """`n` single-row writes, one transaction each (autocommit), timed at the client."""
    times = []
    for _ in range(n):
        params = (f"title {rng.random()}", rng.randint(1, scale.posts))
        started = time.perf_counter()
        conn.execute(WRITE, params, prepare=True)
        times.append((time.perf_counter() - started) * 1000)
    return times


def _throughput(dsn: str, clients: int, seconds: float, scale: Scale, seed: str) -> int:
    """Transactions committed by `clients` concurrent writers in `seconds` (disjoint rows).

    Every phase needs its own `seed`: a write repeating the title a row already has changes no
    TVIEW row, and would not be the write being measured."""
    stop = threading.Event()
    committed = [0] * clients
    failures: list[BaseException] = []

    def client(index: int) -> None:
        rng = random.Random(f"{seed}:{index}")
        share = scale.posts // clients
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SET synchronous_commit = off")
                while not stop.is_set():
                    conn.execute(WRITE, (f"title {rng.random()}", 1 + index * share + rng.randrange(share)),
                                 prepare=True)
                    committed[index] += 1
        except BaseException as exc:  # reported by the caller, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return sum(committed)


def measure(
    dsn: str,
    *,
    scale: Scale = Scale.scaled(0.1),
    iterations: int = 1000,
    rounds: int = 4,
    clients: int = 8,
    seconds: float = 2.0,
    seed: int = 7,
    progress: Callable[[str], None] = lambda message: None,
    keep: bool = False,
) -> OverheadReport:
    """Measure on the server of `dsn` (in a scratch database, dropped afterwards unless `keep`)."""
    if iterations < 1 or rounds < 1 or clients < 0:
        raise UsageError("iterations and rounds must be at least 1, clients at least 0")
    with psycopg.connect(dsn, autocommit=True) as admin:
        version = admin.execute("SHOW server_version").fetchone()[0]
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        target = make_conninfo(dsn, dbname=DATABASE)
        try:
            with psycopg.connect(target, autocommit=True) as conn:
                progress(f"setting up: {scale.users} users, {scale.posts} posts, {scale.comments} comments, tv_post")
                commit_steps = _setup(conn, scale)
                conn.execute("SET synchronous_commit = off")
                results = {v: VariantResult(v) for v in VARIANTS}
                rng = random.Random(seed)
                _latencies(conn, rng, scale, max(50, iterations // 10))  # warm up caches and plans
                for round_no in range(rounds):
                    order = VARIANTS if round_no % 2 == 0 else VARIANTS[::-1]
                    for variant in order:
                        conn.execute(commit_steps[variant])
                        progress(f"round {round_no + 1}/{rounds}: {variant}")
                        results[variant].latencies_ms += _latencies(conn, rng, scale, iterations)
                        if clients:
                            results[variant].transactions += _throughput(target, clients, seconds, scale,
                                                                         f"{seed}:{round_no}:{variant}")
                            results[variant].seconds += seconds
                conn.execute(commit_steps[VARIANTS[0]])
                started = time.perf_counter()
                folded = conn.execute("SELECT tviews.pg_tviews_stats_rollup()").fetchone()[0]
                rollup_ms = (time.perf_counter() - started) * 1000
        finally:
            if not keep:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
    return OverheadReport(version, scale, iterations, rounds, clients, results, folded, rollup_ms)
