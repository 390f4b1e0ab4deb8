"""`pg-tviews bench`: write latency with each read-model implementation, measured in one run.

Every contender gets its own database cloned from one generated data set, and every operation
runs the same seeded sequence of writes against each, one transaction per write, timed at the
client (round trip and commit included). Reported: median and p95 per operation, and ratios
against the hand-written optimum and the plain write.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import psycopg
from psycopg import sql

from .blog import SCHEMA_SQL, load_data
from .contenders import HANDWRITTEN, MATVIEW, PLAIN, Contender, tviews_contender


@dataclass(frozen=True)
class Scale:
    users: int = 10_000
    posts: int = 100_000
    comments: int = 500_000
    prolific: int = 1_000  # posts of user 1

    @classmethod
    def scaled(cls, factor: float) -> Scale:
        return cls(max(10, int(10_000 * factor)), max(100, int(100_000 * factor)),
                   max(100, int(500_000 * factor)), max(10, int(1_000 * factor)))


@dataclass(frozen=True)
class Operation:
    name: str
    statement: str
    params: Callable[[random.Random, Scale], tuple]
    bulk: bool = False


def _unprolific_post(rng: random.Random, s: Scale) -> int:
    return rng.randint(s.prolific + 1, s.posts)


OPERATIONS = [
    Operation("update user", "UPDATE tb_user SET name = %s WHERE pk_user = %s",
              lambda r, s: (f"name {r.random()}", r.randint(2, s.users))),
    Operation("update post", "UPDATE tb_post SET title = %s WHERE pk_post = %s",
              lambda r, s: (f"title {r.random()}", _unprolific_post(r, s))),
    Operation("insert comment", "INSERT INTO tb_comment (fk_post, fk_user, body) VALUES (%s, %s, %s)",
              lambda r, s: (_unprolific_post(r, s), r.randint(1, s.users), f"comment {r.random()}")),
    Operation("update 1000 posts", "UPDATE tb_post SET title = %s WHERE pk_post BETWEEN %s AND %s + 999",
              lambda r, s: (lambda start: (f"bulk {r.random()}", start, start))(
                  r.randint(s.prolific + 1, max(s.prolific + 1, s.posts - 1000))),
              bulk=True),
    Operation("update user with 1000 posts", "UPDATE tb_user SET name = %s WHERE pk_user = 1",
              lambda r, s: (f"prolific {r.random()}",), bulk=True),
    Operation("update unread column", "UPDATE tb_user SET last_login = now() WHERE pk_user = %s",
              lambda r, s: (r.randint(1, s.users),)),
]


@dataclass
class Measurement:
    operation: str
    contender: str
    runs: int
    median_ms: float
    p95_ms: float


@dataclass
class BenchReport:
    scale: Scale
    server_version: str
    seed: int
    measurements: list[Measurement] = field(default_factory=list)

    def get(self, operation: str, contender: str) -> Measurement | None:
        return next((m for m in self.measurements if m.operation == operation and m.contender == contender), None)

    def ratio(self, operation: str, contender: str, baseline: str) -> float | None:
        a, b = self.get(operation, contender), self.get(operation, baseline)
        if a is None or b is None or b.median_ms == 0:
            return None
        return a.median_ms / b.median_ms

    def as_dict(self) -> dict:
        return {
            "scale": asdict(self.scale),
            "server_version": self.server_version,
            "seed": self.seed,
            "measurements": [asdict(m) for m in self.measurements],
        }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _create_database(admin: psycopg.Connection, name: str, template: str | None = None) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    if template:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    else:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def run(
    dsn: str,
    *,
    scale: Scale = Scale(),
    iterations: int = 200,
    bulk_iterations: int = 20,
    matview_iterations: int = 3,
    contenders: list[Contender] | None = None,
    seed: int = 42,
    progress: Callable[[str], None] = lambda message: None,
    keep: bool = False,
) -> BenchReport:
    """Run the benchmark on the server of `dsn` (databases pg_tviews_bench_* are created there)."""
    contenders = contenders or [PLAIN, HANDWRITTEN, tviews_contender(), MATVIEW]
    base = "pg_tviews_bench_data"
    with psycopg.connect(dsn, autocommit=True) as admin:
        version = admin.execute("SHOW server_version").fetchone()[0]
        progress(f"generating data: {scale.users} users, {scale.posts} posts, {scale.comments} comments")
        _create_database(admin, base)
        with psycopg.connect(_with_db(dsn, base), autocommit=True) as conn:
            conn.execute(SCHEMA_SQL)
            load_data(conn, **asdict(scale))
        report = BenchReport(scale, version, seed)
        databases = []
        try:
            for contender in contenders:
                dbname = f"pg_tviews_bench_{len(databases)}"
                databases.append(dbname)
                progress(f"setting up {contender.name}")
                _create_database(admin, dbname, base)
                with psycopg.connect(_with_db(dsn, dbname), autocommit=True) as conn:
                    contender.setup(conn)
                    conn.execute("SET synchronous_commit = off")
                    for operation in OPERATIONS:
                        runs = matview_iterations if contender.after_write else (
                            bulk_iterations if operation.bulk else iterations)
                        progress(f"{contender.name}: {operation.name} x{runs}")
                        report.measurements.append(
                            _measure(conn, contender, operation, runs, scale, seed))
        finally:
            if not keep:
                for dbname in [*databases, base]:
                    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
    return report


def _measure(conn, contender: Contender, operation: Operation, runs: int, scale: Scale, seed: int) -> Measurement:
    rng = random.Random(f"{seed}:{operation.name}")
    warmup = 3 if contender.after_write else max(3, runs // 10)
    times = []
    for i in range(warmup + runs):
        params = operation.params(rng, scale)
        started = time.perf_counter()
        if contender.after_write:
            with conn.transaction():
                conn.execute(operation.statement, params, prepare=True)
                conn.execute(contender.after_write)
        else:  # autocommit: one round trip, the commit included
            conn.execute(operation.statement, params, prepare=True)
        elapsed = (time.perf_counter() - started) * 1000
        if i >= warmup:
            times.append(elapsed)
    return Measurement(operation.name, contender.name, runs, statistics.median(times), _percentile(times, 0.95))


def _with_db(dsn: str, dbname: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, dbname=dbname)
