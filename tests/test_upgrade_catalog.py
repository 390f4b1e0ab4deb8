"""The catalog migration chain: every upgrade and downgrade step, proven by fingerprints.

After migrating, the catalog fingerprint equals a fresh install of the target version and equals
a dump + restore of the migrated database; TVIEWs created before each step stay exact and keep
being maintained after it."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import psycopg
import pytest

import workload
from oracle import assert_exact
from pg_tviews import catalog
from pg_tviews.catalog import extension
from pg_tviews.upgrade import fingerprint as fp
from pg_tviews.upgrade import journal, migrate

STEPS = [
    ("0.1.0", "0.1.1"),
    ("0.1.1", "0.2.0"),
    ("0.1.0", "0.2.0"),
    ("0.2.0", "0.1.1"),
    ("0.1.1", "0.1.0"),
    ("0.2.0", "0.1.0"),
    ("0.2.0", "0.2.1"),
    ("0.2.1", "0.2.0"),
    ("0.1.0", "0.2.1"),
    ("0.2.1", "0.2.2"),
    ("0.2.2", "0.2.1"),
    ("0.1.0", "0.2.2"),
    ("0.2.2", "0.2.3"),
    ("0.2.3", "0.2.2"),
    ("0.1.0", "0.2.3"),
]


MODES = ["schema", "extension"]


@pytest.fixture(scope="module")
def fresh_fingerprints():
    return {}


@pytest.fixture
def extension_files(pg):
    """The extension's files in the cluster's installation (what `pg-tviews extension install` does)."""
    try:
        return extension.install_files(pg.cluster.binaries.sharedir())
    except PermissionError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"cannot write extension files into {pg.cluster.binaries.sharedir()} (run as root)")


def fresh(pg, cache, version: str, mode: str = "schema"):
    """Fingerprint of a fresh install of `version` on this cluster (computed once)."""
    if (pg.major, version, mode) not in cache:
        name = pg.create_database(prefix="fresh")
        try:
            with psycopg.connect(pg.dsn(name), autocommit=True) as conn:
                catalog.install(conn, version, mode=mode)
                cache[(pg.major, version, mode)] = fp.fingerprint(conn)
        finally:
            pg.drop_database(name)
    return cache[(pg.major, version, mode)]


def dump_and_restore(pg, dbname: str, extension_version: str | None = None) -> str:
    """Dump the database with pg_dump and restore it into a new one; returns the new DSN.

    pg_dump records CREATE EXTENSION without a version, so in extension mode the restoring side
    creates the extension at the dumped version first (as `pg-tviews migrate` does)."""
    target = pg.create_database(template="template0", prefix="restored")
    if extension_version:
        with psycopg.connect(pg.dsn(target), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE EXTENSION pg_tviews VERSION {}").format(
                psycopg.sql.Literal(extension_version)))
    dump = subprocess.run([str(pg.cluster.binaries.tool("pg_dump")), "-Fc", "-d", pg.dsn(dbname)],
                          capture_output=True, check=True).stdout
    restore = subprocess.run([str(pg.cluster.binaries.tool("pg_restore")), "--exit-on-error", "-d", pg.dsn(target)],
                             input=dump, capture_output=True)
    assert restore.returncode == 0, restore.stderr.decode()
    return pg.dsn(target)


def some_writes(conn) -> None:
    conn.execute("UPDATE tb_user SET name = name || '+' WHERE pk_user IN (1, 2)")
    conn.execute("INSERT INTO tb_comment (pk_comment, fk_post, fk_user, body)"
                 " SELECT coalesce(max(pk_comment), 0) + 1, 12, 3, 'after' FROM tb_comment")
    conn.execute("UPDATE tb_post SET fk_user = 5 WHERE pk_post = 24")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source, target", STEPS, ids=[f"{a}-to-{b}" for a, b in STEPS])
def test_migration_step(pg, conn, fresh_fingerprints, extension_files, source, target, mode):
    catalog.install(conn, source, mode=mode)
    workload.setup(conn, "immediate")
    some_writes(conn)
    assert_exact(conn, *workload.TVIEWS, context=f"on {source}")

    result = migrate.run(conn, target)
    assert result.result == "succeeded", result.error
    assert catalog.installed(conn).version == target and catalog.installed(conn).mode == mode
    differences = fp.differences(fp.fingerprint(conn), fresh(pg, fresh_fingerprints, target, mode))
    assert not differences, "\n".join(differences)
    assert_exact(conn, *workload.TVIEWS, context=f"after {source} -> {target}")
    some_writes(conn)
    assert_exact(conn, *workload.TVIEWS, context=f"writes after {source} -> {target}")
    assert [(e.from_version, e.to_version, e.result) for e in journal.history(conn)][-1] == (source, target, "succeeded")

    restored = dump_and_restore(pg, conn.info.dbname, target if mode == "extension" else None)
    with psycopg.connect(restored, autocommit=True) as copy:
        assert catalog.installed(copy).mode == mode
        differences = fp.differences(fp.fingerprint(copy), fresh(pg, fresh_fingerprints, target, mode))
        assert not differences, "\n".join(differences)
        some_writes(copy)
        assert_exact(copy, *workload.TVIEWS, context=f"restored after {source} -> {target}")


def test_chain_is_consistent():
    chain = catalog.load()
    assert chain.versions == ["0.1.0", "0.1.1", "0.2.0", "0.2.1", "0.2.2", "0.2.3"]
    for a in chain.versions:
        for b in chain.versions:
            chain.path(a, b)  # every version reaches every other


@pytest.mark.parametrize("version", ["0.1.0", "0.1.1", "0.2.0", "0.2.1", "0.2.2", "0.2.3"])
def test_both_install_modes_give_the_same_catalog(pg, fresh_fingerprints, extension_files, version):
    differences = fp.differences(fresh(pg, fresh_fingerprints, version, "schema"),
                                 fresh(pg, fresh_fingerprints, version, "extension"), ignore=("extension_config",))
    assert not differences, "\n".join(differences)
    config = fresh(pg, fresh_fingerprints, version, "extension")["extension_config"][0][0]
    assert {"repair", "queue", "refresh_stat", "upgrade_history"} <= set(config)
    assert ({"entity", "entity_source"} if version >= "0.2.0" else {"tview"}) <= set(config)


def test_failed_migration_changes_nothing_and_is_journaled(pg, conn):
    catalog.install(conn, "0.1.1")
    workload.setup(conn, "immediate")
    before = fp.fingerprint(conn)
    # an object in the way of the migration: it fails midway, after its first statements ran
    conn.execute("CREATE TABLE tviews.entity_source_relation_idx (x int)")
    with pytest.raises(Exception, match="already exists"):
        migrate.run(conn, "0.2.0")
    conn.execute("DROP TABLE tviews.entity_source_relation_idx")
    assert catalog.installed(conn).version == "0.1.1"
    assert not fp.differences(fp.fingerprint(conn), before)
    last = journal.history(conn)[-1]
    assert (last.from_version, last.to_version, last.result) == ("0.1.1", "0.2.0", "failed")
    assert "already exists" in last.error
    some_writes(conn)
    assert_exact(conn, *workload.TVIEWS)
    assert migrate.run(conn, "0.2.0").result == "succeeded"


def test_killed_connection_during_migration_changes_nothing(pg, conn, connect):
    catalog.install(conn, "0.1.1")
    workload.setup(conn, "immediate")
    before = fp.fingerprint(conn)
    blocker = connect(conn.info.dsn)
    blocker.execute("BEGIN")
    blocker.execute("LOCK TABLE tviews.refresh_stat IN ACCESS SHARE MODE")  # the migration alters it midway
    migrating = connect(conn.info.dsn)
    outcome = {}

    def upgrade():
        try:
            outcome["result"] = migrate.run(migrating, "0.2.0")
        except Exception as exc:  # the connection is killed under it
            outcome["error"] = exc

    thread = threading.Thread(target=upgrade)
    thread.start()
    pid = migrating.info.backend_pid
    for _ in range(200):
        waiting = conn.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        if waiting and waiting[0]:
            break
        time.sleep(0.05)
    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    thread.join(timeout=60)
    blocker.execute("ROLLBACK")
    assert "error" in outcome
    assert catalog.installed(conn).version == "0.1.1"
    assert not fp.differences(fp.fingerprint(conn), before)
    last = journal.history(conn)[-1]
    assert (last.to_version, last.result) == ("0.2.0", "failed")  # journaled on a connection of its own
    assert "terminat" in last.error
    some_writes(conn)
    assert_exact(conn, *workload.TVIEWS)


def test_rollback_returns_to_the_previous_version(pg, conn):
    catalog.install(conn, "0.1.0")
    workload.setup(conn, "deferred")
    migrate.run(conn, "0.2.0")
    assert migrate.previous_version(conn) == "0.1.0"
    result = migrate.run(conn, migrate.previous_version(conn), method="rollback")
    assert result.result == "succeeded" and catalog.installed(conn).version == "0.1.0"
    some_writes(conn)
    assert_exact(conn, *workload.TVIEWS)
