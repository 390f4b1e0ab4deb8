"""Logical migration 15 -> 18 (`pg-tviews migrate`): TVIEWs arrive alive, in both install modes,
and every precondition refuses clearly."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import psycopg
import pytest

import harness
import workload
from oracle import assert_exact
from pg_tviews import catalog
from pg_tviews.catalog import extension
from pg_tviews.errors import UsageError
from pg_tviews.upgrade import journal, logical, pgupgrade
from pg_tviews.upgrade.checks import Limits

SEED = int(os.environ.get("PG_TVIEWS_SEED", "1518"))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pg_tviews", *args], capture_output=True, text=True, timeout=600)


def write(conn: psycopg.Connection, seed: int, id_base: int, count: int = 40) -> None:
    writer = workload.Writer(random.Random(seed), id_base=id_base)
    for _ in range(count):
        conn.execute(*writer.statement())


@pytest.fixture
def servers(cluster_pool):
    """(source PostgreSQL 15, target PostgreSQL 18) and a source database holding TVIEWs."""
    harness.require_binaries("15")
    source, target = cluster_pool.get(15), cluster_pool.get(18)
    name = source.create_database(prefix="blog")
    made = []
    yield source, target, name, made
    source.drop_database(name)
    for database in made:
        target.drop_database(database)


def extension_files(*clusters) -> None:
    for c in clusters:
        try:
            extension.install_files(c.cluster.binaries.sharedir())
        except PermissionError:
            if os.environ.get("CI"):
                raise
            pytest.skip(f"cannot write extension files into {c.cluster.binaries.sharedir()} (run as root)")


@pytest.mark.parametrize("mode", ["schema", "extension"])
def test_migrate_15_to_18(servers, mode):
    source, target, name, made = servers
    if mode == "extension":
        extension_files(source, target)
    with psycopg.connect(source.dsn(name), autocommit=True) as conn:
        catalog.install(conn, mode=mode)
        workload.setup(conn)
        write(conn, SEED, id_base=1000)
        conn.execute("CREATE SEQUENCE invoice_number START 500")
        conn.execute("SELECT nextval('invoice_number') FROM generate_series(1, 7)")
    moved = f"moved_{os.getpid()}_{mode}"
    made.append(moved)
    run = cli("--json", "migrate", "--from", source.dsn(name), "--to", target.dsn(moved), "--jobs", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["result"] == "succeeded" and report["created"] and report["target_version"].startswith("18.")
    assert report["tools"].startswith("pg_dump/pg_restore 18.")
    assert [s["name"] for s in report["steps"]][1:3] == ["dump with pg_dump 18", "restore: pre-data, data, post-data"]
    counts = {t["table"]: (t["source"], t["target"]) for t in report["tables"]}
    assert counts["public.tv_post"][0] > 0 and all(s == t for s, t in counts.values())
    assert {f["check"] for f in report["findings"]} >= {"rows", "sequences", "consistency", "liveness"}

    with psycopg.connect(target.dsn(moved), autocommit=True) as conn:
        assert catalog.installed(conn) == catalog.InstalledCatalog(catalog.load().current, mode)
        assert conn.execute("SELECT nextval('invoice_number')").fetchone()[0] == 507
        write(conn, SEED + 1, id_base=5000)
        conn.execute("UPDATE tb_user SET name = 'on 18' WHERE pk_user = 1")
        assert conn.execute("SELECT count(*) FROM tv_feed WHERE author = 'on 18'").fetchone()[0] > 0
        assert_exact(conn, *workload.TVIEWS, context=f"(seed {SEED}) after the migration")
        entry = journal.history(conn)[-1]
        assert (entry.from_version.split(".")[0], entry.to_version.split(".")[0], entry.result) == (
            "PostgreSQL 15", "PostgreSQL 18", "succeeded")

    # the target database is not empty any more: a second migration into it is refused
    again = cli("migrate", "--from", source.dsn(name), "--to", target.dsn(moved))
    assert again.returncode == 2 and f"the target database {moved} is not empty" in again.stderr


def test_migrate_refusals(servers, connect):
    source, target, name, made = servers
    with psycopg.connect(source.dsn(name), autocommit=True) as conn:
        catalog.install(conn)
        workload.setup(conn)
    moved = f"refused_{os.getpid()}"

    with pytest.raises(UsageError, match="older than the source's"):  # 18 -> 15
        logical.migrate(target.dsn(), source.dsn(moved))

    with pytest.raises(pgupgrade.UpgradeRefused) as refused:
        logical.migrate(source.dsn(name), target.dsn(moved), limits=Limits(disk_factor=1e12))
    assert "MiB needed" in {c.name: c.message for c in refused.value.result.checks}["target: disk"]

    other = connect(source.dsn(name))
    other.execute("BEGIN")
    other.execute("UPDATE tb_user SET karma = 1 WHERE pk_user = 2")
    other.execute("PREPARE TRANSACTION 'pg_tviews_migrate'")
    try:
        with pytest.raises(pgupgrade.UpgradeRefused, match="source: prepared_transactions"):
            logical.migrate(source.dsn(name), target.dsn(moved))
    finally:
        other.execute("ROLLBACK PREPARED 'pg_tviews_migrate'")

    with psycopg.connect(source.dsn(name), autocommit=True) as conn:
        conn.execute("INSERT INTO tviews.queue (entity_id, keys) VALUES (1, '{1}')")
        with pytest.raises(pgupgrade.UpgradeRefused, match="source: queue"):
            logical.migrate(source.dsn(name), target.dsn(moved))
        conn.execute("DELETE FROM tviews.queue")

        role = f"blog_owner_{os.getpid()}"
        conn.execute(f"CREATE ROLE {role}")
        conn.execute(f"ALTER TABLE tb_like OWNER TO {role}")
        try:
            with pytest.raises(pgupgrade.UpgradeRefused, match=f"missing on the target: {role}") as refused:
                logical.migrate(source.dsn(name), target.dsn(moved))
            assert "pg_dumpall --roles-only" in refused.value.hint
        finally:
            conn.execute("ALTER TABLE tb_like OWNER TO postgres")
            conn.execute(f"DROP ROLE {role}")
    with psycopg.connect(target.dsn(), autocommit=True) as conn:  # nothing was created on the target
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (moved,)).fetchone()[0] == 0
