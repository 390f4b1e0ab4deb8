"""Through a real PgBouncer in transaction pooling mode: TVIEWs stay exact and no pg_tviews state
leaks from one client to the next on a shared server connection. PgBouncer (Debian package pgbouncer) is started by the test; `.ci/run`
installs it."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time

import psycopg
import pytest

import harness
import workload
from oracle import assert_exact
from pg_tviews import worker
from pg_tviews.server.cluster import free_port, server_os_user

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@pytest.fixture
def bouncer(pg, tvdb):
    if not os.path.exists(PGBOUNCER):
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is not installed (.ci/run installs the Debian package)")
        pytest.skip("pgbouncer is not installed")
    directory = harness.scratch_dir("pg_tviews-pgbouncer-")
    port = free_port()
    dbname = psycopg.conninfo.conninfo_to_dict(tvdb)["dbname"]
    (directory / "users.txt").write_text('"postgres" ""\n')
    (directory / "pgbouncer.ini").write_text(
        f"[databases]\n{dbname} = host=127.0.0.1 port={pg.cluster.port()} dbname={dbname} user=postgres\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory}/users.txt\npool_mode = transaction\n"
        "default_pool_size = 2\nmax_client_conn = 100\nserver_reset_query =\n"
        f"logfile = {directory}/pgbouncer.log\npidfile = {directory}/pgbouncer.pid\n"
    )
    user = server_os_user()
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        for path in directory.iterdir():
            os.chown(path, entry.pw_uid, entry.pw_gid)
    command = [PGBOUNCER, str(directory / "pgbouncer.ini")]
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    dsn = f"host=127.0.0.1 port={port} dbname={dbname} user=postgres"
    deadline = time.monotonic() + 20
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"pgbouncer did not start: {(directory / 'pgbouncer.log').read_text()}")
            time.sleep(0.1)
    yield dsn
    proc.terminate()
    proc.wait(timeout=20)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.majors("newest")
@pytest.mark.parametrize("mode", ["immediate", "deferred", "async"])
def test_transaction_pooling(pg, tvconn, bouncer, mode):
    workload.setup(tvconn, mode)
    leaks: list[str] = []

    def client(index: int) -> None:
        rng = random.Random(index)
        writer = workload.Writer(rng, id_base=10_000 * (index + 1))
        # no server-side prepared statements: they do not survive transaction pooling
        with psycopg.connect(bouncer, autocommit=True, prepare_threshold=None) as conn:
            for _ in range(40):
                try:
                    leftover = conn.execute(
                        "SELECT coalesce(current_setting('pg_tviews.xact', true), ''),"
                        "       coalesce(current_setting('pg_tviews.todo', true), '')"
                    ).fetchone()
                    if leftover[0] or leftover[1] not in ("", ","):
                        leaks.append(f"client {index} saw {leftover}")
                    with conn.transaction():
                        for _ in range(rng.randint(1, 3)):
                            conn.execute(*writer.statement())
                except psycopg.errors.DeadlockDetected:
                    continue  # two clients writing the same rows in different orders

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not leaks, leaks
    if mode == "async":
        worker.drain(tvconn)
    assert_exact(tvconn, *workload.TVIEWS)
