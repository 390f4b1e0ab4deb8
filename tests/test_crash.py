"""Crashes: the postmaster and its processes SIGKILLed during writes, a bulk refresh, the creation
of a TVIEW and a catalog migration; after crash recovery every TVIEW is exact (oracle), the async
queue holds no half-processed item and drains to exact, and the catalog is at a journaled version.

Each major gets a private cluster with durable settings (fsync, synchronous_commit), killed and
restarted by the tests one after the other; the shared session clusters are never killed. Random
writes are seeded: PG_TVIEWS_SEED (printed).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

import harness
import workload
from oracle import assert_exact, drift
from pg_tviews import catalog, engine, worker
from pg_tviews.upgrade import fingerprint as fp
from pg_tviews.upgrade import journal, migrate

SEED = int(os.environ.get("PG_TVIEWS_SEED", "7331"))
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
#: errors a client retries (two writers updating the same rows in different orders)
RETRYABLE = {"40P01", "40001"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "crashable" in metafunc.fixturenames:
        majors = metafunc.config.pg_majors
        metafunc.parametrize("crashable", majors, indirect=True, ids=[f"pg{m}" for m in majors], scope="module")


@pytest.fixture(scope="module")
def crashable(request) -> harness.TestCluster:
    """A private cluster of one major, shared by this module's tests, which kill it."""
    tc = harness.TestCluster.start(harness.available_majors()[request.param], settings=DURABLE)
    yield tc
    tc.destroy()


@pytest.fixture
def crashdb(crashable):
    """DSN of a fresh database in the crashable cluster (restarted if a failed test left it down)."""
    if not crashable.cluster.is_running():
        crashable.cluster.start()
    name = crashable.create_database(prefix="crash")
    yield name
    if not crashable.cluster.is_running():
        crashable.cluster.start()
    crashable.drop_database(name)


def server_processes(postmaster: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 1 and int(fields[1]) == postmaster:
            children.append(int(entry.name))
    return children


def kill(tc: harness.TestCluster) -> None:
    """SIGKILL the postmaster and, right after, every process it started (so that no backend
    finishes what it was doing)."""
    postmaster = tc.cluster.pid()
    assert postmaster is not None, "the server is not running"
    children = server_processes(postmaster)
    os.kill(postmaster, signal.SIGKILL)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for _ in range(400):
        if tc.cluster.pid() is None and not server_processes(postmaster):
            return
        time.sleep(0.025)
    raise AssertionError("the killed server's processes did not go away")


def recover(tc: harness.TestCluster) -> None:
    """Start the killed server: crash recovery from the WAL (checked in its log)."""
    log_size = tc.cluster.log_path.stat().st_size
    tc.cluster.start()
    with tc.cluster.log_path.open(errors="replace") as log:
        log.seek(log_size)
        recovery = log.read()
    assert "not properly shut down" in recovery and "redo" in recovery, recovery[-2000:]


def crash(tc: harness.TestCluster) -> None:
    kill(tc)
    recover(tc)


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def waiting_on_lock(conn: psycopg.Connection, pid: int) -> bool:
    row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row[0] == "Lock"


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pg_tviews", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def drifted_keys(conn: psycopg.Connection, entity: int) -> set[int]:
    """Keys of the rows where a TVIEW differs from its definition (the oracle, by key)."""
    schema, table, definition, search_path, key = conn.execute(
        "SELECT schema_name, table_name, definition, search_path, key_column FROM tviews.entity WHERE id = %s",
        (entity,)).fetchone()
    target, key = psycopg.sql.Identifier(schema, table), psycopg.sql.Identifier(key)
    with conn.transaction():
        conn.execute("SELECT set_config('search_path', %s, true)", (search_path,))
        return {r[0] for r in conn.execute(psycopg.sql.SQL(
            "SELECT {key} FROM (SELECT * FROM {t} EXCEPT ALL ({d})) extra"
            " UNION SELECT {key} FROM (({d}) EXCEPT ALL SELECT * FROM {t}) missing"
        ).format(key=key, t=target, d=psycopg.sql.SQL(definition)))}


def assert_only_repairs_pending(conn: psycopg.Connection, context: str) -> None:
    """Right after recovery, a TVIEW row may differ from its definition only while it waits in
    tviews.repair: a commit step yielded it to a transaction that was to recompute it when it
    committed, and the crash aborted that one (docs/concurrency.md, repairs); the next commit step
    of the TVIEW or a worker round applies it."""
    for (entity,) in conn.execute("SELECT id FROM tviews.entity ORDER BY id").fetchall():
        waiting = {r[0] for r in conn.execute("SELECT key FROM tviews.repair WHERE entity_id = %s", (entity,))}
        drifted = drifted_keys(conn, entity)
        assert drifted <= waiting, f"TVIEW {entity}: rows {sorted(drifted - waiting)} drifted {context}"


def queue_counts(conn: psycopg.Connection) -> tuple[int, int]:
    """(pending, failed) items of the async queue."""
    return conn.execute("SELECT count(*) FILTER (WHERE processed_at IS NULL AND NOT failed), count(*) FILTER"
                        " (WHERE failed) FROM tviews.pg_tviews_queue").fetchone()


def random_writes(conn: psycopg.Connection, seed: int, transactions: int, id_base: int) -> None:
    rng = random.Random(seed)
    writer = workload.Writer(rng, id_base=id_base)
    for _ in range(transactions):
        try:
            with conn.transaction():
                for _ in range(rng.randint(1, 3)):
                    conn.execute(*writer.statement())
        except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):  # with concurrent writers
            pass


def writer_loop(dsn: str, seed: int, index: int, report: dict, paused: threading.Event | None = None) -> None:
    """Random write transactions until the server goes away (or a deadlock or serialization
    failure ends the writer: psycopg raises both as OperationalError); between two transactions,
    idle while `paused` is set (reported in report["idle"])."""
    rng = random.Random(seed * 100 + index)
    writer = workload.Writer(rng, id_base=100_000 * (index + 1))
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while True:
                if paused is not None and paused.is_set():
                    report["idle"].add(index)
                    time.sleep(0.01)
                    continue
                report["idle"].discard(index)
                statements = [writer.statement() for _ in range(rng.randint(1, 3))]
                try:
                    with conn.transaction():
                        for statement in statements:
                            conn.execute(*statement)
                    report["committed"] += 1
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    if exc.sqlstate not in RETRYABLE or "tviews." in (exc.diag.context or ""):
                        report["errors"].append(f"writer {index}: {exc.sqlstate} {exc}")
                        return
    except psycopg.OperationalError:  # the crash
        return


def worker_loop(dsn: str, paused: threading.Event) -> None:
    """The async worker, until the server goes away."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while True:
                if paused.is_set() or not worker.process_once(conn, 20):
                    time.sleep(0.02)
    except psycopg.OperationalError:
        return


# -- a: writes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["immediate", "deferred", "async"])
def test_crash_during_writes(crashable, crashdb, connect, mode):
    """Writers, an open write transaction, prepared transactions (and in async mode a worker and a
    worker round left open) when the server dies: committed writes are there and exact, the open
    transaction left nothing, prepared ones still commit or roll back, the queue resumes."""
    seed = SEED + {"immediate": 0, "deferred": 1, "async": 2}[mode]
    print(f"seed {seed} ({mode})")
    dsn = crashable.dsn(crashdb)
    conn = connect(dsn)
    catalog.install(conn)
    workload.setup(conn, mode)
    worker.drain(conn)
    conn.execute("SET statement_timeout = '30s'")  # a hang here is a failure, not a stuck test

    report = {"committed": 0, "errors": [], "idle": set()}
    worker_paused = threading.Event()
    writers_paused = threading.Event()
    threads = [threading.Thread(target=writer_loop, args=(dsn, seed, i, report, writers_paused)) for i in range(4)]
    if mode == "async":
        threads.append(threading.Thread(target=worker_loop, args=(dsn, worker_paused)))
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    # While the writers idle between transactions: a write transaction left in progress, the last
    # transaction to commit, and prepared transactions. A prepared transaction holds what it wrote,
    # and the commit slots it took, until COMMIT PREPARED; a writer whose commit step shares a slot
    # with it (also by a hash collision) waits for it, here until the crash. Statements of this
    # test that ran after the prepared transactions could queue behind such a writer.
    writers_paused.set()
    deadline = time.monotonic() + 30
    while len(report["idle"]) + sum(not t.is_alive() for t in threads[:4]) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(report["idle"]) + sum(not t.is_alive() for t in threads[:4]) == 4, "the writers did not pause"
    open_tx = connect(dsn)
    open_tx.execute("BEGIN")
    open_tx.execute("INSERT INTO tb_post (pk_post, fk_user, title) VALUES (900001, 1, 'never committed')")
    open_tx.execute("INSERT INTO tb_comment (pk_comment, fk_post, fk_user, body) VALUES (900006, 3, 1, 'never')")
    conn.execute("INSERT INTO tb_post (pk_post, fk_user, title) VALUES (900007, 2, 'committed')")
    for gid, user, post, comment in (("crash_commit", 13, 900_002, 900_003), ("crash_rollback", 14, 900_004, 900_005)):
        prepared = connect(dsn)
        prepared.execute("SET statement_timeout = '30s'")
        prepared.execute("BEGIN")
        prepared.execute("INSERT INTO tb_user (pk_user, name) VALUES (%s, %s)", (user, gid))
        prepared.execute("INSERT INTO tb_post (pk_post, fk_user, title) VALUES (%s, %s, %s)", (post, user, gid))
        prepared.execute("INSERT INTO tb_comment (pk_comment, fk_post, fk_user, body) VALUES (%s, %s, %s, %s)",
                         (comment, post, user, gid))
        prepared.execute(f"PREPARE TRANSACTION '{gid}'")
    writers_paused.clear()
    claimed: list[int] = []
    if mode == "async":  # a worker round in progress: items claimed, not committed
        worker_paused.set()
        time.sleep(0.2)
        random_writes(conn, seed, 5, id_base=600_000)
        open_round = connect(dsn)
        open_round.execute("BEGIN")
        open_round.execute("SELECT tviews.pg_tviews_process_queue(50)")
        # processed as this round sees them, pending for everyone else: its own
        processed = [r[0] for r in open_round.execute("SELECT id FROM tviews.queue WHERE processed_at IS NOT NULL")]
        claimed = [r[0] for r in conn.execute(
            "SELECT id FROM tviews.queue WHERE id = ANY(%s) AND processed_at IS NULL", (processed,))]
        assert claimed
        worker_paused.clear()
    time.sleep(0.3)
    crash(crashable)
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a writer did not stop"
    assert not report["errors"], "\n".join(report["errors"])
    assert report["committed"] > 10, report
    context = f"(seed {seed}, {mode}, {report['committed']} transactions before the crash)"

    conn = connect(crashable.dsn(crashdb))
    assert conn.execute("SELECT count(*) FROM tb_post WHERE pk_post IN (900001, 900007)").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM tb_comment WHERE pk_comment = 900006").fetchone()[0] == 0
    assert sorted(r[0] for r in conn.execute("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()")) \
        == ["crash_commit", "crash_rollback"]
    if mode == "async":
        pending, failed = queue_counts(conn)
        assert failed == 0 and pending >= len(claimed), (pending, failed, claimed)
        half = conn.execute("SELECT count(*) FROM tviews.queue WHERE id = ANY(%s) AND (processed_at IS NOT NULL"
                            " OR attempts > 0)", (claimed,)).fetchone()[0]
        assert half == 0, f"{half} of the {len(claimed)} items claimed by the interrupted round are not pending"
        worker.drain(conn)  # pg-tviews worker --once
        assert queue_counts(conn) == (0, 0)
        assert_exact(conn, *workload.TVIEWS, context=f"after recovery {context}")
    else:
        # Rows yielded to repair are recomputed by a commit step (the worker's round), which waits
        # for a prepared transaction that holds one of its slots, by a shared value or a hash
        # collision: it can run only once those are resolved.
        assert_only_repairs_pending(conn, context)

    conn.execute("COMMIT PREPARED 'crash_commit'")
    conn.execute("ROLLBACK PREPARED 'crash_rollback'")
    worker.drain(conn)
    assert queue_counts(conn) == (0, 0)
    assert not conn.execute("SELECT count(*) FROM tviews.repair").fetchone()[0]
    assert_exact(conn, *workload.TVIEWS, context=f"after the prepared transactions {context}")
    assert conn.execute("SELECT count(*) FROM tv_post WHERE pk_post IN (900001, 900007)").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM tv_post WHERE pk_post IN (900002, 900004)").fetchone()[0] == 1

    random_writes(conn, seed, 60, id_base=800_000)
    worker.drain(conn)
    assert queue_counts(conn) == (0, 0)
    assert_exact(conn, *workload.TVIEWS, context=f"after writes following recovery {context}")


# -- b: bulk refresh, creation -----------------------------------------------------------------------

BIG = {"users": 500, "posts": 20_000}


def big_blog(conn: psycopg.Connection) -> None:
    catalog.install(conn)
    workload.setup(conn, "immediate", **BIG)


def table_digest(conn: psycopg.Connection, table: str) -> tuple[int, str]:
    return conn.execute(psycopg.sql.SQL("SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {} t")
                        .format(psycopg.sql.Identifier(table))).fetchone()


def test_crash_during_bulk_refresh(crashable, crashdb, connect):
    """`pg-tviews refresh` rewriting every row of a drifted TVIEW, killed with the rows written and
    the cascade waiting: after recovery the TVIEW is as it was (not half refreshed); a new refresh
    makes it exact."""
    dsn = crashable.dsn(crashdb)
    conn = connect(dsn)
    big_blog(conn)
    # drift in every row (as after a restore that skipped triggers): the refresh rewrites them all
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE tv_post SET data = data || '{\"stale\": true}'")
    conn.execute("VACUUM FULL tv_post")  # no free space left: rewritten rows go to new pages
    before = table_digest(conn, "tv_post")
    size = "SELECT pg_relation_size('tv_post')"
    size_before = conn.execute(size).fetchone()[0]
    assert drift(conn, "tv_post") == (BIG["posts"], BIG["posts"])
    # the cascade into tv_feed waits for this lock after tv_post is rewritten
    blocker = connect(dsn)
    blocker.execute("BEGIN")
    blocker.execute("LOCK TABLE tv_feed IN SHARE MODE")
    refresh = cli("--dsn", dsn, "refresh", "tv_post")
    wait_for(lambda: conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                  " AND wait_event_type = 'Lock' AND query LIKE '%%pg_tviews_refresh%%'").fetchone()[0],
             "the refresh to wait for the cascade")
    # every row rewritten (new row versions, not committed) before the cascade waits
    assert conn.execute(size).fetchone()[0] > 1.5 * size_before
    crash(crashable)
    out, err = refresh.communicate(timeout=60)
    assert refresh.returncode != 0, out + err

    conn = connect(crashable.dsn(crashdb))
    assert table_digest(conn, "tv_post") == before
    assert_exact(conn, "tv_user", "tv_feed")
    assert not conn.execute("SELECT count(*) FROM tviews.repair").fetchone()[0]
    engine.refresh(conn, "tv_post")
    assert_exact(conn, *workload.TVIEWS, context="after the refresh re-run")
    random_writes(conn, SEED, 30, id_base=800_000)
    assert_exact(conn, *workload.TVIEWS, context=f"after writes following recovery (seed {SEED})")


def test_crash_during_tview_creation(crashable, crashdb, connect):
    """Creation of a TVIEW over many rows, killed after its table is populated while it waits to
    install its triggers: after recovery nothing of it exists, the others are exact, and it can
    be created again."""
    dsn = crashable.dsn(crashdb)
    conn = connect(dsn)
    big_blog(conn)
    objects = "SELECT count(*) FROM pg_class WHERE relname LIKE 'tv%'"
    functions = "SELECT count(*) FROM pg_proc WHERE pronamespace = 'tviews'::regnamespace"
    before = (conn.execute(objects).fetchone()[0], conn.execute(functions).fetchone()[0])
    blocker = connect(dsn)
    blocker.execute("BEGIN")
    blocker.execute("LOCK TABLE tb_like IN ROW EXCLUSIVE MODE")  # CREATE TRIGGER on it waits
    creating = connect(dsn)
    outcome: dict = {}

    def create():
        try:
            engine.create(creating, "tv_post_copy", workload.TV_POST)
        except Exception as exc:  # the crash
            outcome["error"] = exc

    thread = threading.Thread(target=create)
    thread.start()
    pid = creating.info.backend_pid
    wait_for(lambda: waiting_on_lock(conn, pid), "the creation to wait for its trigger")
    crash(crashable)
    thread.join(timeout=60)
    assert isinstance(outcome.get("error"), psycopg.OperationalError), outcome

    conn = connect(crashable.dsn(crashdb))
    assert conn.execute("SELECT to_regclass('tv_post_copy')").fetchone()[0] is None
    assert conn.execute("SELECT count(*) FROM tviews.entity WHERE table_name = 'tv_post_copy'").fetchone()[0] == 0
    assert (conn.execute(objects).fetchone()[0], conn.execute(functions).fetchone()[0]) == before
    assert_exact(conn, *workload.TVIEWS)
    engine.create(conn, "tv_post_copy", workload.TV_POST)
    random_writes(conn, SEED, 30, id_base=800_000)
    assert_exact(conn, *workload.TVIEWS, "tv_post_copy", context=f"(seed {SEED})")


# -- c: catalog migration ----------------------------------------------------------------------------


def old_catalog(conn: psycopg.Connection) -> None:
    catalog.install(conn, "0.1.0")
    workload.setup(conn, "immediate")
    engine.create(conn, "tv_post_async", workload.TV_POST, mode="async")


def last_succeeded(conn: psycopg.Connection) -> str | None:
    entries = [e for e in journal.history(conn) if e.result == "succeeded"]
    return entries[-1].to_version if entries else None


def recorded_version(conn: psycopg.Connection) -> str:
    """The catalog's version, checked against its own record of migrations."""
    version = conn.execute("SELECT tviews.pg_tviews_version()").fetchone()[0]
    applied = conn.execute("SELECT to_version FROM tviews.schema_migration ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert version == applied == catalog.installed(conn).version
    return version


def test_crash_during_catalog_migration(crashable, crashdb, connect):
    """`pg-tviews upgrade run` 0.1.0 -> 0.2.0 killed with its transaction open (waiting for a lock
    midway): after recovery the catalog is 0.1.0 as before, the journal records the run as
    interrupted, TVIEWs are exact, and the upgrade then succeeds."""
    dsn = crashable.dsn(crashdb)
    conn = connect(dsn)
    old_catalog(conn)
    random_writes(conn, SEED, 20, id_base=700_000)
    worker.drain(conn)
    before = fp.fingerprint(connect(dsn))  # a new session, like the one after the crash (same search_path)
    blocker = connect(dsn)
    blocker.execute("BEGIN")
    blocker.execute("LOCK TABLE tviews.refresh_stat IN ACCESS SHARE MODE")  # 0.1.1 -> 0.2.0 alters it
    run = cli("--dsn", dsn, "upgrade", "run", "--to", "0.2.0", "--no-backup")

    def migrating_session() -> int | None:
        assert run.poll() is None, run.communicate()
        row = conn.execute("SELECT session_pid FROM tviews.upgrade_history WHERE result = 'running'").fetchone()
        return row[0] if row and waiting_on_lock(conn, row[0]) else None

    wait_for(migrating_session, "the migration to wait midway")
    entry, pid = conn.execute("SELECT id, session_pid FROM tviews.upgrade_history WHERE result = 'running'").fetchone()
    # its session holds the entry's lock; a concurrent reader leaves the entry running
    assert journal.close_interrupted(conn) == []
    crash(crashable)
    out, err = run.communicate(timeout=60)
    assert run.returncode != 0, out + err
    dsn = crashable.dsn(crashdb)
    conn = connect(dsn)
    assert recorded_version(conn) == "0.1.0"
    changed = fp.differences(fp.fingerprint(conn), before)
    assert not changed, "\n".join(changed)
    assert journal.history(conn)[-1].result == "running"
    history = subprocess.run([sys.executable, "-m", "pg_tviews", "--json", "--dsn", dsn, "upgrade", "history"],
                             capture_output=True, text=True, timeout=120)
    assert history.returncode == 0, history.stderr
    last = json.loads(history.stdout)[-1]
    assert (last["id"], last["session_pid"], last["result"]) == (entry, pid, "interrupted")
    assert "interrupted" in last["error"] and "0.1.0" in last["error"]
    assert last_succeeded(conn) is None  # installed, never upgraded: the install is the record
    worker.drain(conn)
    assert_exact(conn, *workload.TVIEWS, "tv_post_async")

    result = migrate.run(conn, "0.2.0")
    assert (result.result, result.error) == ("succeeded", None)
    assert recorded_version(conn) == last_succeeded(conn) == "0.2.0"
    assert [e.result for e in journal.history(conn)] == ["interrupted", "succeeded"]
    random_writes(conn, SEED + 2, 30, id_base=720_000)
    worker.drain(conn)
    assert_exact(conn, *workload.TVIEWS, "tv_post_async", context=f"(seed {SEED})")


def test_killed_client_during_catalog_migration(crashable, crashdb, connect):
    """`pg-tviews upgrade run` SIGKILLed while its migration waits (the server stays up): its session
    ends, the transaction rolls back, and the next run records the entry as interrupted."""
    dsn = crashable.dsn(crashdb)
    conn = connect(dsn)
    old_catalog(conn)
    blocker = connect(dsn)
    blocker.execute("BEGIN")
    blocker.execute("LOCK TABLE tviews.refresh_stat IN ACCESS SHARE MODE")
    run = cli("--dsn", dsn, "upgrade", "run", "--to", "0.2.0", "--no-backup")
    wait_for(lambda: conn.execute("SELECT count(*) FROM tviews.upgrade_history h JOIN pg_stat_activity a"
                                  " ON a.pid = h.session_pid WHERE h.result = 'running'"
                                  " AND a.wait_event_type = 'Lock'").fetchone()[0], "the migration to wait")
    run.kill()
    run.communicate(timeout=60)
    # the backend notices its client is gone when it next reads from it: once the lock is free
    blocker.execute("ROLLBACK")
    wait_for(lambda: not conn.execute("SELECT count(*) FROM pg_stat_activity a JOIN tviews.upgrade_history h"
                                      " ON a.pid = h.session_pid").fetchone()[0], "the session to end")
    assert recorded_version(conn) == "0.1.0"
    result = migrate.run(conn, "0.2.0")
    assert result.result == "succeeded"
    first, second = journal.history(conn)
    assert (first.result, second.result) == ("interrupted", "succeeded")
    assert f"pid {first.session_pid}" in first.error
    assert recorded_version(conn) == last_succeeded(conn) == "0.2.0"
    assert_exact(conn, *workload.TVIEWS)


def test_crash_right_after_the_migration_commits(crashable, crashdb, connect):
    """A crash after the migration transaction committed, before the run could record its end: the
    journal already says succeeded (the migration transaction wrote it), so the catalog version and
    the last succeeded entry agree; the run reports that its validation did not complete."""
    conn = connect(crashable.dsn(crashdb))
    old_catalog(conn)
    migrating = connect(crashable.dsn(crashdb))

    def progress(message: str) -> None:
        if message == "validating":
            kill(crashable)

    result = migrate.run(migrating, "0.2.0", progress=progress)
    assert result.result == "succeeded" and "validation after the migration did not complete" in result.error
    assert "journal not updated" in result.error
    recover(crashable)
    conn = connect(crashable.dsn(crashdb))
    assert journal.close_interrupted(conn) == []
    assert recorded_version(conn) == last_succeeded(conn) == "0.2.0"
    random_writes(conn, SEED, 30, id_base=700_000)
    worker.drain(conn)
    assert_exact(conn, *workload.TVIEWS, "tv_post_async", context=f"(seed {SEED})")


@pytest.mark.parametrize("crashed", [False, True], ids=["no crash", "crash"])
def test_prepared_transaction_keeps_its_commit_slots_across_a_crash(crashable, crashdb, connect, crashed):
    """A prepared transaction orders the commit steps of transactions that share its commit slots:
    one whose change the prepared one affects (a comment by a user it renamed) waits for it, then
    recomputes, so the TVIEW is exact once both commit; across a crash too (tviews.commit_slot is
    logged, and recovery restores the prepared transaction's row locks on its slots)."""
    dsn = crashable.dsn(crashdb)
    conn = connect(dsn)
    catalog.install(conn)
    conn.execute(workload.SCHEMA)
    conn.execute("INSERT INTO tb_user (pk_user, name) VALUES (1, 'ann'), (5, 'bob')")
    conn.execute("INSERT INTO tb_post (pk_post, fk_user, title) VALUES (1, 1, 'by ann'), (2, 5, 'by bob')")
    engine.create(conn, "tv_post", workload.TV_POST)
    prepared = connect(dsn)
    prepared.execute("BEGIN")
    prepared.execute("UPDATE tb_user SET name = 'robert' WHERE pk_user = 5")
    prepared.execute("PREPARE TRANSACTION 'crash_rename'")
    if crashed:
        crash(crashable)

    dsn = crashable.dsn(crashdb)
    conn = connect(dsn)
    # bob comments on ann's post (a row the prepared rename did not touch): the rename reaches it
    writer = connect(dsn)
    outcome: dict = {}

    def comment():
        try:
            writer.execute("INSERT INTO tb_comment (pk_comment, fk_post, fk_user, body) VALUES (1, 1, 5, 'hi')")
            outcome["done"] = True
        except psycopg.Error as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=comment)
    thread.start()
    thread.join(timeout=2)  # it commits at once, or waits for the prepared transaction
    conn.execute("COMMIT PREPARED 'crash_rename'")
    thread.join(timeout=60)
    assert outcome.get("done"), outcome
    assert_exact(conn, "tv_post", context=f"tv_post: {conn.execute('SELECT * FROM tv_post ORDER BY 1').fetchall()}")
