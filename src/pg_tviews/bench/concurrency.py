"""`pg-tviews bench-concurrency`: throughput of concurrent writers with each read model, and exactness after.

pgbench drives N clients for a fixed time per workload against one database per contender, all
cloned from one generated data set in the same run. Every transaction is one write (the commit
included); serialization failures and deadlocks are retried by pgbench and counted. After each
run the read model is compared with its definition (EXCEPT ALL both ways): a contender that
drifts is fast but wrong. For async, the worker runs during the measurement and the backlog
left at the end is drained (and timed) before the comparison.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .. import worker
from ..errors import TViewError, UsageError
from ..upgrade import tools
from .blog import SCHEMA_SQL, TV_POST_SQL, load_data
from .contenders import HANDWRITTEN, PLAIN, Contender, tviews_contender
from .runner import Scale, _create_database

# pgbench scripts; variables come from -D (users, posts, prolific, hot).
WORKLOADS: dict[str, list[tuple[str, str]]] = {
    "update posts": [("post", """\\set pk random(:prolific + 1, :posts)
UPDATE tb_post SET title = 'p ' || :client_id || ' ' || random() WHERE pk_post = :pk;
""")],
    "update users": [("user", """\\set pk random(2, :users)
UPDATE tb_user SET name = 'u ' || :client_id || ' ' || random() WHERE pk_user = :pk;
""")],
    # The anomaly of DESIGN §3 on purpose: renames of a few hot users race with new posts by them
    # and with posts moving between them.
    "mixed hot users": [
        ("rename", """\\set u random(2, 1 + :hot)
UPDATE tb_user SET name = 'h ' || :client_id || ' ' || random() WHERE pk_user = :u;
"""),
        ("new post", """\\set u random(2, 1 + :hot)
INSERT INTO tb_post (fk_user, title) VALUES (:u, 'new ' || :client_id);
"""),
        ("move post", """\\set u random(2, 1 + :hot)
\\set p random(:prolific + 1, :posts)
UPDATE tb_post SET fk_user = :u WHERE pk_post = :p;
"""),
    ],
}

CONTENDERS = [PLAIN, HANDWRITTEN, tviews_contender("immediate"), tviews_contender("deferred"),
              tviews_contender("async")]


@dataclass
class Run:
    workload: str
    contender: str
    tps: float
    transactions: int
    retried: int
    failed: int
    latency_median_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    drifted_rows: int | None  # None: no read model to compare
    backlog_after: int = 0  # async: items still queued when the writers stopped
    drain_s: float = 0.0


@dataclass
class ConcurrencyReport:
    scale: Scale
    server_version: str
    clients: int
    duration_s: int
    runs: list[Run] = field(default_factory=list)

    def get(self, workload: str, contender: str) -> Run | None:
        return next((r for r in self.runs if r.workload == workload and r.contender == contender), None)

    def ratio(self, workload: str, contender: str, baseline: str) -> float | None:
        a, b = self.get(workload, contender), self.get(workload, baseline)
        return a.tps / b.tps if a and b and b.tps else None

    def as_dict(self) -> dict:
        return {"scale": asdict(self.scale), "server_version": self.server_version, "clients": self.clients,
                "duration_s": self.duration_s, "runs": [asdict(r) for r in self.runs]}


def run(dsn: str, *, scale: Scale = Scale(), clients: int = 8, duration: int = 10, hot: int = 50,
        workloads: list[str] | None = None, contenders: list[Contender] | None = None,
        progress: Callable[[str], None] = lambda message: None, keep: bool = False) -> ConcurrencyReport:
    """Measure every workload with every contender on the server of `dsn` (databases
    pg_tviews_bench_c* are created there and dropped afterwards)."""
    workloads = workloads or list(WORKLOADS)
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        raise UsageError(f"unknown workload {unknown[0]!r}", hint="choose among: " + ", ".join(WORKLOADS))
    contenders = contenders or CONTENDERS
    base = "pg_tviews_bench_cdata"
    with psycopg.connect(dsn, autocommit=True) as admin:
        version = admin.execute("SHOW server_version").fetchone()[0]
        pgbench = tools.for_server(admin.info.server_version // 10000).tool("pgbench")
        progress(f"generating data: {scale.users} users, {scale.posts} posts, {scale.comments} comments")
        _create_database(admin, base)
        with psycopg.connect(make_conninfo(dsn, dbname=base), autocommit=True) as conn:
            conn.execute(SCHEMA_SQL)
            load_data(conn, **asdict(scale))
        report = ConcurrencyReport(scale, version, clients, duration)
        variables = {"users": scale.users, "posts": scale.posts, "prolific": scale.prolific, "hot": hot}
        try:
            with tempfile.TemporaryDirectory(prefix="pg_tviews-bench-") as scratch:
                for workload in workloads:
                    for contender in contenders:
                        dbname = "pg_tviews_bench_c"
                        progress(f"{workload}: {contender.name}, {clients} clients, {duration} s")
                        _create_database(admin, dbname, base)
                        target = make_conninfo(dsn, dbname=dbname)
                        with psycopg.connect(target, autocommit=True) as conn:
                            contender.setup(conn)
                            conn.execute("CHECKPOINT")
                        report.runs.append(_measure(pgbench, target, Path(scratch), workload, contender,
                                                    clients, duration, variables))
                        if not keep:
                            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
        finally:
            if not keep:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(base)))
    return report


def _measure(pgbench: Path, dsn: str, scratch: Path, workload: str, contender: Contender, clients: int,
             duration: int, variables: dict[str, int]) -> Run:
    logs = Path(tempfile.mkdtemp(dir=scratch))
    command = [str(pgbench), "--no-vacuum", "--protocol=prepared", f"--client={clients}",
               f"--jobs={min(clients, os.cpu_count() or 1)}", f"--time={duration}", "--max-tries=20",
               "--log", f"--log-prefix={logs / 'tx'}"]
    for name, value in variables.items():
        command.append(f"--define={name}={value}")
    for index, (name, script) in enumerate(WORKLOADS[workload]):
        path = logs / f"{index}-{name.replace(' ', '_')}.sql"
        path.write_text(script)
        command.append(f"--file={path}@1")
    command.append(_pgbench_dsn(dsn))
    env = dict(os.environ, PGOPTIONS="-c synchronous_commit=off")

    stop = threading.Event()
    background = None
    if contender.mode == "async":
        background = threading.Thread(
            target=worker.run, args=(lambda: psycopg.connect(dsn, autocommit=True),),
            kwargs={"stop": stop, "poll_interval": 0.2}, daemon=True)
        background.start()
    try:
        outcome = subprocess.run(command, capture_output=True, text=True, env=env, cwd=logs)
    finally:
        stop.set()
        if background is not None:
            background.join()
    if outcome.returncode != 0:
        raise TViewError(f"pgbench failed for {contender.name} / {workload}: "
                         + (outcome.stderr.strip().splitlines() or ["no output"])[-1])
    tps = float(re.search(r"tps = ([\d.]+)", outcome.stdout).group(1))
    transactions = int(re.search(r"number of transactions actually processed: (\d+)", outcome.stdout).group(1))
    retried = re.search(r"number of transactions retried: (\d+)", outcome.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", outcome.stdout)
    latencies = _latencies(logs)

    backlog, drain_s, drifted = 0, 0.0, None
    with psycopg.connect(dsn, autocommit=True) as conn:
        if contender.mode == "async":
            backlog = worker.status(conn).pending
            started = time.perf_counter()
            worker.drain(conn)
            drain_s = time.perf_counter() - started
        if contender.name != PLAIN.name:
            drifted = _drifted_rows(conn)
    return Run(workload, contender.name, tps, transactions, int(retried.group(1)) if retried else 0,
               int(failed.group(1)) if failed else 0, statistics.median(latencies),
               latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], latencies[-1],
               drifted, backlog, drain_s)


def _pgbench_dsn(dsn: str) -> str:
    """pgbench takes the connection string as its database name argument (libpq expands it)."""
    params = {k: v for k, v in conninfo_to_dict(dsn).items() if k != "sslcertmode"}
    return make_conninfo(**params)


def _latencies(logs: Path) -> list[float]:
    """Per-transaction latencies in ms from pgbench's --log files (3rd field, microseconds)."""
    values = []
    for path in logs.glob("tx*"):
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():
                values.append(int(fields[2]) / 1000)
    return sorted(values) or [0.0]


def _drifted_rows(conn: psycopg.Connection) -> int:
    """Keys whose tv_post row differs from the definition (missing, extra or different)."""
    definition = f"SELECT pk_post, id, fk_user, data FROM ({TV_POST_SQL}) d"
    table = "SELECT pk_post, id, fk_user, data FROM tv_post"
    return conn.execute(
        f"SELECT count(DISTINCT pk_post) FROM ((({table}) EXCEPT ALL ({definition}))"
        f" UNION ALL (({definition}) EXCEPT ALL ({table}))) diff").fetchone()[0]
