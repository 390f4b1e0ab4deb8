"""The quickstart demo: the blog read model on a real server, following writes as they commit.

Everything happens in a dedicated database (`pg_tviews_demo`), dropped and recreated on every run
so the demo is repeatable, and kept afterwards for exploring. Steps: create the blog schema with a
little data and two TVIEWs, perform a few writes and read the document after each, take the
status screen, and time writes against REFRESH MATERIALIZED VIEW with the benchmark runner.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from .. import bench, catalog, engine
from ..bench.blog import SCHEMA_SQL, TV_POST_SQL, TV_USER_SQL, load_data
from ..bench.contenders import MATVIEW, PLAIN, tviews_contender
from . import status

DATABASE = "pg_tviews_demo"
DATA = {"users": 200, "posts": 2_000, "comments": 10_000, "prolific": 25}
BENCH_SCALE = bench.Scale(users=500, posts=5_000, comments=25_000, prolific=50)
POST = 1  # the post the demo follows; its author (user 1) wrote `prolific` posts

#: (what the step does, the write), each committed on its own
WRITES = [
    ("rename the author", "UPDATE tb_user SET name = 'Ada Lovelace' WHERE pk_user = 1"),
    ("add a comment", "INSERT INTO tb_comment (fk_post, fk_user, body) VALUES (1, 2, 'What a machine!')"),
    ("edit the title", "UPDATE tb_post SET title = 'Notes on the Analytical Engine' WHERE pk_post = 1"),
    ("delete the comment", "DELETE FROM tb_comment WHERE body = 'What a machine!'"),
]


@dataclass
class Step:
    action: str
    sql: str
    ms: float  # the write, its commit and every TVIEW refresh it caused
    rows_rewritten: int  # TVIEW rows the refreshes changed
    document: dict  # tv_post's document of the followed post, read right after the commit


@dataclass
class DemoReport:
    database: str
    dsn: str
    tviews: list[str]
    before: dict
    steps: list[Step]
    status: status.StatusReport
    bench: bench.BenchReport | None
    seconds: float
    explore: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "database": self.database, "dsn": self.dsn, "tviews": self.tviews, "before": self.before,
            "steps": [s.__dict__ for s in self.steps], "status": self.status.as_dict(),
            "bench": self.bench.as_dict() if self.bench else None, "seconds": self.seconds,
            "explore": self.explore,
        }


def with_database(dsn: str, dbname: str) -> str:
    """The same connection string pointing at another database (URIs stay URIs, for display)."""
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(dsn)
        return urlunsplit(parts._replace(path=f"/{dbname}"))
    return make_conninfo(dsn, dbname=dbname)


def _summary(conn: psycopg.Connection) -> dict:
    """The followed post's document, trimmed to what the demo shows."""
    data = conn.execute("SELECT data FROM tv_post WHERE pk_post = %s", (POST,)).fetchone()[0]
    comments = data["comments"]
    return {"title": data["title"], "author": data["author"]["name"], "comments": len(comments),
            "last_comment": comments[-1]["body"] if comments else None}


def _rows_changed(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT coalesce(sum(rows_changed), 0) FROM tviews.pg_tviews_stats").fetchone()[0])


def _prepare(conn: psycopg.Connection) -> list[str]:
    """Catalog, blog schema and data, and the TVIEWs the demo follows."""
    catalog.install(conn)
    conn.execute(SCHEMA_SQL)
    load_data(conn, **DATA)
    created = [engine.create(conn, "tv_post", TV_POST_SQL, mode="immediate"),
               engine.create(conn, "tv_user", TV_USER_SQL, mode="deferred")]
    conn.execute("VACUUM ANALYZE")
    return [t.name for t in created]


def run(dsn: str, *, with_bench: bool = True, progress: Callable[[str], None] = lambda message: None) -> DemoReport:
    """Run the demo on the server of `dsn` (which must allow CREATE DATABASE)."""
    started = time.perf_counter()
    target = with_database(dsn, DATABASE)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    with psycopg.connect(target, autocommit=True) as conn:
        progress(f"creating the blog schema ({DATA['users']} users, {DATA['posts']} posts, "
                 f"{DATA['comments']} comments) and its TVIEWs in database {DATABASE}")
        tviews = _prepare(conn)
        before = _summary(conn)
        steps = []
        for action, write in WRITES:
            changed = _rows_changed(conn)
            began = time.perf_counter()
            conn.execute(write)
            ms = (time.perf_counter() - began) * 1000
            steps.append(Step(action, write, ms, _rows_changed(conn) - changed, _summary(conn)))
        report_status = status.collect(conn)
    report_bench = None
    if with_bench:
        progress(f"benchmark: {BENCH_SCALE.posts} posts, pg_tviews against REFRESH MATERIALIZED VIEW")
        report_bench = bench.run(dsn, scale=BENCH_SCALE, iterations=100, bulk_iterations=5, matview_iterations=3,
                                 contenders=[PLAIN, tviews_contender(), MATVIEW],
                                 progress=lambda message: progress(f"  {message}"))
    return DemoReport(DATABASE, target, tviews, before, steps, report_status, report_bench,
                      time.perf_counter() - started, explore_commands(target))


def explore_commands(dsn: str) -> list[str]:
    """What to run next against the demo database."""
    opt = f"--dsn '{dsn}'"
    return [
        f"psql '{dsn}' -c \"SELECT jsonb_pretty(data) FROM tv_post WHERE pk_post = {POST}\"",
        f"pg-tviews {opt} status --watch",
        f"pg-tviews {opt} explain tv_post",
        f"pg-tviews {opt} graph --format mermaid",
        f"pg-tviews {opt} stats",
        f"pg-tviews {opt} health",
        f"pg-tviews {opt} verify",
        f"pg-tviews {opt} metrics serve --port 9188",
    ]
