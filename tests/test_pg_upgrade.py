"""PostgreSQL upgrades with TVIEWs alive: minor 15.17 -> 15.19, pg_upgrade 15 -> 16 (link),
16 -> 17 (copy, then rollback), 17 -> the embedded 18 (link, extension mode, async TVIEWs).

Each old cluster is created here with the old binaries and holds the blog workload (an array of
comments, a cascade); random writes go in before and after the upgrade (seeded), and the oracle
checks every TVIEW after. Real binaries, real servers, real pg_upgrade.
"""

from __future__ import annotations

import contextlib
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
from pg_tviews import catalog, worker
from pg_tviews.catalog import extension
from pg_tviews.errors import UpgradeError, UsageError
from pg_tviews.server.cluster import Binaries, Cluster
from pg_tviews.upgrade import journal, pgupgrade

SEED = int(os.environ.get("PG_TVIEWS_SEED", "615"))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pg_tviews", *args], capture_output=True, text=True, timeout=600)


def write(conn: psycopg.Connection, mode: str, seed: int, id_base: int, count: int = 40) -> None:
    """Random writes (seeded; the seed is in the failure message of the oracle), applied when async."""
    writer = workload.Writer(random.Random(seed), id_base=id_base)
    for _ in range(count):
        conn.execute(*writer.statement())
    if mode == "async":
        worker.drain(conn)


@contextlib.contextmanager
def old_cluster(binaries: Binaries, *, mode: str = "immediate", install: str = "schema", version: str | None = None):
    """A cluster of the old binaries with one database holding TVIEWs, written to; yields
    (cluster, database, new data directory). Whatever runs in the new data directory is stopped."""
    tc = harness.TestCluster.start(binaries)
    new_dir = tc.root / "new"
    try:
        name = tc.create_database(prefix="blog")
        with psycopg.connect(tc.dsn(name), autocommit=True) as conn:
            catalog.install(conn, version, mode=install)
            workload.setup(conn, mode)
            write(conn, mode, SEED, id_base=1000)
            assert_exact(conn, *workload.TVIEWS, context=f"(seed {SEED}) before the upgrade")
        yield tc, name, new_dir
    finally:
        if (new_dir / "postmaster.pid").exists():
            Cluster(new_dir, binaries).kill()
        tc.destroy()


def check_alive(dsn: str, mode: str, major: int, context: str) -> psycopg.Connection:
    """The upgraded database: on the new major, writes reach every TVIEW, the oracle agrees."""
    conn = psycopg.connect(dsn, autocommit=True)
    assert conn.info.server_version // 10000 == major
    write(conn, mode, SEED + 1, id_base=5000)
    conn.execute("UPDATE tb_user SET name = 'after the upgrade' WHERE pk_user = 1")
    if mode == "async":
        worker.drain(conn)
    assert conn.execute("SELECT count(*) FROM tv_feed WHERE author = 'after the upgrade'").fetchone()[0] > 0
    assert_exact(conn, *workload.TVIEWS, context=f"(seed {SEED}) {context}")
    return conn


def extension_files(binaries: Binaries) -> None:
    try:
        extension.install_files(binaries.sharedir())
    except PermissionError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"cannot write extension files into {binaries.sharedir()} (run as root)")


def test_minor_upgrade_15_17_to_15_19_and_back():
    old, new = harness.require_binaries("15.17"), harness.require_binaries("15.19")
    with old_cluster(old) as (tc, name, _new_dir):
        data = str(tc.cluster.datadir)
        # refused: the running server is not the one --old-bindir names, or already runs the new binaries
        other = harness.require_binaries("15")  # Debian's, another 15.x
        if other.version not in (old.version, new.version):
            with pytest.raises(UsageError, match=r"runs .*/postgres, not the binaries in"):
                pgupgrade.minor(data, str(other.bindir), str(new.bindir))
        with pytest.raises(UsageError, match="already runs on"):
            pgupgrade.minor(data, str(new.bindir), str(old.bindir))
        run = cli("--json", "pg-upgrade", "minor", "--data-dir", data, "--old-bindir", str(old.bindir),
                  "--new-bindir", str(new.bindir))
        assert run.returncode == 0, run.stdout + run.stderr
        report = json.loads(run.stdout)
        assert (report["result"], report["from_version"], report["to_version"]) == ("succeeded", "15.17", "15.19")
        assert [s["name"] for s in report["steps"]] == ["pre-upgrade checks", "clean shutdown",
                                                          "start on the new binaries", "validate"]
        assert report["port"] == tc.cluster.port()
        server = Cluster(tc.cluster.datadir, new)
        assert server.executable() == new.tool("postgres").resolve()
        with check_alive(tc.dsn(name), "immediate", 15, "after the minor upgrade") as conn:
            assert conn.execute("SHOW server_version").fetchone()[0].startswith("15.19")
            entry = journal.history(conn)[-1]
            assert (entry.from_version, entry.to_version, entry.method, entry.result) == (
                "PostgreSQL 15.17", "PostgreSQL 15.19", "minor: restart on new binaries", "succeeded")

        # the rollback the report names: the same command, binaries swapped
        assert report["rollback"].endswith(f"--old-bindir {new.bindir} --new-bindir {old.bindir}")
        back = cli("--json", "pg-upgrade", "minor", "--data-dir", data, "--old-bindir", str(new.bindir),
                   "--new-bindir", str(old.bindir))
        assert back.returncode == 0, back.stdout + back.stderr
        with psycopg.connect(tc.dsn(name), autocommit=True) as conn:
            assert conn.execute("SHOW server_version").fetchone()[0].startswith("15.17")
            conn.execute("UPDATE tb_post SET title = 'back on 15.17' WHERE pk_post = 3")
            assert_exact(conn, *workload.TVIEWS, context="after going back to 15.17")


TEMPLATE0 = ("SELECT pg_encoding_to_char(encoding), datlocprovider, datcollate, datctype FROM pg_database"
             " WHERE datname = 'template0'")


def test_major_15_to_16_link_mode_from_a_stopped_cluster():
    old, new = harness.require_binaries("15"), harness.require_binaries("16")
    with old_cluster(old) as (tc, name, new_dir):
        with psycopg.connect(tc.dsn(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET work_mem = '7MB'")
            template0 = conn.execute(TEMPLATE0).fetchone()
        tc.cluster.stop()  # a stopped cluster is started for the checks; the new one is left stopped too
        result = pgupgrade.major(str(old.bindir), tc.cluster.datadir, str(new.bindir), new_dir, method="link")
        assert result.ok, (result.error, result.checks)
        assert [s.name for s in result.steps][4:6] == ["pg_upgrade --check", "pg_upgrade --link"]
        # pg_upgrade disabled the old cluster, whose files the new one now shares
        assert (tc.cluster.datadir / "global" / "pg_control.old").exists()
        [db] = result.databases
        assert db.database == name and {f.check for f in db.findings} >= {"consistency", "liveness", "sequences"}
        assert all(f.status == "ok" for f in db.findings if f.check in ("consistency", "liveness"))

        new_cluster = Cluster(new_dir, new)
        assert not new_cluster.is_running()
        new_cluster.start()
        assert new_cluster.port() == result.port
        assert (new_dir / "pg_hba.conf").read_text() == (tc.cluster.datadir / "pg_hba.conf").read_text()
        with check_alive(new_cluster.dsn(name), "immediate", 16, "after pg_upgrade 15 -> 16") as conn:
            assert conn.execute(TEMPLATE0).fetchone() == template0
            settings = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name IN"
                                         " ('work_mem', 'max_prepared_transactions', 'data_checksums')"))
            assert settings == {"work_mem": "7168", "max_prepared_transactions": "20", "data_checksums": "off"}
            entry = journal.history(conn)[-1]
            assert (entry.method, entry.result, entry.to_version) == ("pg_upgrade --link", "succeeded",
                                                                      f"PostgreSQL {result.to_version}")
        with pytest.raises(UpgradeError, match="link mode") as refused:
            pgupgrade.rollback(new_dir)
        assert "no rollback" in refused.value.hint


def test_major_16_to_17_copy_mode_then_rollback():
    old, new = harness.require_binaries("16"), harness.require_binaries("17")
    with old_cluster(old, mode="deferred") as (tc, name, new_dir):
        old_port = tc.cluster.port()
        run = cli("--json", "pg-upgrade", "major", "--old-bindir", str(old.bindir), "--old-datadir",
                  str(tc.cluster.datadir), "--new-bindir", str(new.bindir), "--new-datadir", str(new_dir), "--copy",
                  "--jobs", "2")
        assert run.returncode == 0, run.stdout + run.stderr
        report = json.loads(run.stdout)
        assert (report["result"], report["method"], report["port"]) == ("succeeded", "copy", old_port)
        assert "pg-upgrade rollback --new-datadir" in report["rollback"]
        assert any("vacuumdb --all --analyze-in-stages" in note for note in report["notes"])
        new_cluster = Cluster(new_dir, new)
        assert new_cluster.port() == old_port  # the new server took the old one's place
        with check_alive(new_cluster.dsn(name), "deferred", 17, "after pg_upgrade 16 -> 17") as conn:
            conn.execute("UPDATE tb_user SET name = 'only on 17' WHERE pk_user = 2")

        # the new server runs: rolling back now would lose its writes, so it must be stopped first
        refused = cli("pg-upgrade", "rollback", "--new-datadir", str(new_dir))
        assert refused.returncode == 2 and "is running" in refused.stderr and "hint:" in refused.stderr
        new_cluster.stop()
        back = cli("--json", "pg-upgrade", "rollback", "--new-datadir", str(new_dir))
        assert back.returncode == 0, back.stdout + back.stderr
        assert json.loads(back.stdout)["result"] == "succeeded"
        assert tc.cluster.executable() == old.tool("postgres").resolve()
        with psycopg.connect(tc.dsn(name), autocommit=True) as conn:
            assert conn.info.server_version // 10000 == 16
            assert conn.execute("SELECT count(*) FROM tb_user WHERE name = 'only on 17'").fetchone()[0] == 0
            entry = journal.history(conn)[-1]
            assert (entry.method, entry.result) == ("pg_upgrade --copy", "rolled back")
            conn.execute("UPDATE tb_user SET name = 'back on 16' WHERE pk_user = 3")
            assert_exact(conn, *workload.TVIEWS, context="after the rollback")
        again = cli("pg-upgrade", "rollback", "--new-datadir", str(new_dir))
        assert again.returncode == 2 and "already rolled back" in again.stderr


def test_major_17_to_embedded_18_link_mode_extension_async():
    old, new = harness.require_binaries("17"), Binaries.embedded()
    extension_files(old)
    extension_files(new)
    with old_cluster(old, mode="async", install="extension", version="0.1.1") as (tc, name, new_dir):
        run = cli("--json", "pg-upgrade", "major", "--old-bindir", str(old.bindir), "--old-datadir",
                  str(tc.cluster.datadir), "--new-bindir", "embedded", "--new-datadir", str(new_dir), "--link")
        assert run.returncode == 0, run.stdout + run.stderr
        report = json.loads(run.stdout)
        assert report["result"] == "succeeded" and report["to_version"].startswith("18.")
        # the catalog is not upgraded behind the operator's back: that is `pg-tviews upgrade run`
        assert any("pg_tviews stays at 0.1.1" in note for note in report["notes"])
        assert any("--missing-stats-only" in note for note in report["notes"])
        liveness = [f for f in report["databases"][0]["findings"] if f["check"] == "liveness"]
        assert len(liveness) == 3 and all("queued" in f["message"] for f in liveness)
        with check_alive(Cluster(new_dir, new).dsn(name), "async", 18, "after pg_upgrade 17 -> 18") as conn:
            assert conn.execute("SHOW data_checksums").fetchone()[0] == "off"  # as the old cluster
            assert catalog.installed(conn) == catalog.InstalledCatalog("0.1.1", "extension")
