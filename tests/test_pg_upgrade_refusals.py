"""Every precondition of a PostgreSQL upgrade refuses clearly (what, where, how to fix) and
changes nothing: wrong binaries, a non-empty new data directory, too little disk, prepared
transactions, an undrained queue, missing extension files, link mode across file systems."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

import harness
import workload
from pg_tviews import catalog
from pg_tviews.catalog import extension
from pg_tviews.errors import UsageError
from pg_tviews.server.cluster import Binaries
from pg_tviews.upgrade import journal, pgupgrade
from pg_tviews.upgrade.checks import Limits


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pg_tviews", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def cluster16():
    """A PostgreSQL 16 cluster with a database holding TVIEWs (module-wide: refusals change nothing)."""
    old = harness.require_binaries("16")
    tc = harness.TestCluster.start(old)
    name = tc.create_database(prefix="blog")
    with psycopg.connect(tc.dsn(name), autocommit=True) as conn:
        catalog.install(conn)
        workload.setup(conn)
    yield tc, name
    tc.destroy()


@pytest.fixture
def old(cluster16):
    """(cluster, database, old binaries, new binaries, an absent new data directory); the old
    server runs, and every refusal must leave it so."""
    tc, name = cluster16
    tc.cluster.start()
    scratch = harness.scratch_dir("pg_tviews-refusal-")
    yield tc, name, tc.cluster.binaries, harness.require_binaries("17"), scratch / "new"
    assert tc.cluster.is_running(), "a refusal stopped the old server"
    assert not (scratch / "new").exists(), "a refusal left a new data directory behind"
    shutil.rmtree(scratch, ignore_errors=True)


def refused(old, **kwargs) -> pgupgrade.UpgradeRefused:
    tc, _name, old_bins, new_bins, new_dir = old
    with pytest.raises(pgupgrade.UpgradeRefused) as caught:
        pgupgrade.major(str(old_bins.bindir), tc.cluster.datadir, str(new_bins.bindir), new_dir, **kwargs)
    assert caught.value.result.result == "refused" and "nothing was changed" in caught.value.hint
    return caught.value


def failed(error: pgupgrade.UpgradeRefused) -> dict[str, str]:
    return {c.name: c.message for c in error.result.checks if c.status == "fail"}


def test_refuses_binaries_of_the_wrong_versions(old, tmp_path):
    tc, _name, b16, b17, new_dir = old
    data = tc.cluster.datadir
    with pytest.raises(UsageError, match="is a PostgreSQL 16 cluster but --old-bindir holds PostgreSQL 17") as e:
        pgupgrade.major(str(b17.bindir), data, str(b17.bindir), new_dir)
    assert "bin directory of PostgreSQL 16" in e.value.hint
    with pytest.raises(UsageError, match="not a newer major than the old cluster's 16") as e:
        pgupgrade.major(str(b16.bindir), data, str(b16.bindir), new_dir)
    assert "pg-upgrade minor" in e.value.hint
    with pytest.raises(UsageError, match="a minor upgrade stays within one major"):
        pgupgrade.minor(data, str(b16.bindir), str(b17.bindir))
    with pytest.raises(UsageError, match="both hold PostgreSQL 16"):
        pgupgrade.minor(data, str(b16.bindir), str(b16.bindir))
    with pytest.raises(UsageError, match="holds no postgres executable") as e:
        pgupgrade.major(str(tmp_path), data, str(b17.bindir), new_dir)
    assert "pg_config --bindir" in e.value.hint
    with pytest.raises(UsageError, match="is not a PostgreSQL data directory"):
        pgupgrade.major(str(b16.bindir), tmp_path, str(b17.bindir), new_dir)


def test_refuses_a_new_data_directory_that_is_not_empty(old):
    tc, _name, b16, b17, new_dir = old
    new_dir.mkdir()
    (new_dir / "something").write_text("x")
    try:
        run = cli("pg-upgrade", "major", "--old-bindir", str(b16.bindir), "--old-datadir", str(tc.cluster.datadir),
                  "--new-bindir", str(b17.bindir), "--new-datadir", str(new_dir))
        assert run.returncode == 2, run.stdout + run.stderr
        assert f"error: the new data directory {new_dir} is not empty" in run.stderr
        assert "hint: give an absent or empty directory" in run.stderr
    finally:
        shutil.rmtree(new_dir)


def test_refuses_insufficient_disk_and_leaves_a_stopped_cluster_stopped(old):
    tc, name, *_ = old
    tc.cluster.stop()
    error = refused(old, limits=Limits(disk_factor=1e12))
    assert "MiB needed for a copy-mode upgrade" in failed(error)["disk"] and "--link" in error.hint
    assert not tc.cluster.is_running()
    tc.cluster.start()
    with psycopg.connect(tc.dsn(name), autocommit=True) as conn:
        entry = journal.history(conn)[-1]
    assert (entry.method, entry.result, entry.error) == ("pg_upgrade --copy", "failed",
                                                         "refused by the pre-upgrade checks")
    assert "disk" in failed(refused(old, method="link", limits=Limits(link_disk_factor=1e12)))


def test_refuses_prepared_transactions_with_the_checks_as_json(old, connect):
    tc, name, b16, b17, new_dir = old
    other = connect(tc.dsn(name))
    other.execute("BEGIN")
    other.execute("UPDATE tb_user SET karma = karma + 1 WHERE pk_user = 1")
    other.execute("PREPARE TRANSACTION 'pg_tviews_refusal'")
    try:
        run = cli("--json", "pg-upgrade", "major", "--old-bindir", str(b16.bindir), "--old-datadir",
                  str(tc.cluster.datadir), "--new-bindir", str(b17.bindir), "--new-datadir", str(new_dir))
        assert run.returncode == 2, run.stdout + run.stderr
        report = json.loads(run.stdout)
        checks = {c["name"]: c for c in report["checks"]}
        assert report["result"] == "refused" and checks["prepared_transactions"]["status"] == "fail"
        assert f"1 in {name}" in checks["prepared_transactions"]["message"]
        assert "error: refused: prepared_transactions" in run.stderr and "ROLLBACK PREPARED" in run.stderr
    finally:
        other.execute("ROLLBACK PREPARED 'pg_tviews_refusal'")


def test_refuses_an_undrained_queue(old):
    tc, name, *_ = old
    with psycopg.connect(tc.dsn(name), autocommit=True) as conn:
        conn.execute("INSERT INTO tviews.queue (entity_id, keys) VALUES (1, '{1}')")
        try:
            error = refused(old)
        finally:
            conn.execute("DELETE FROM tviews.queue")
    assert failed(error) == {f"{name}: queue": "1 pending queue items; the async queue must be drained first"}
    assert "pg-tviews queue --drain" in error.hint


def test_refuses_missing_extension_files_in_the_new_installation(old):
    tc, _name, b16, b17, new_dir = old
    try:
        extension.install_files(b16.sharedir())
    except PermissionError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"cannot write extension files into {b16.sharedir()} (run as root)")
    # a copy of the 17 installation without pg_tviews' files
    installation = Path(tempfile.mkdtemp(prefix="pg_tviews-pg17-")) / "pg"
    shutil.copytree(b17.bindir.parent, installation, symlinks=True)
    for stale in (installation / "share" / "extension").glob("pg_tviews*"):
        stale.unlink()
    name = tc.create_database(prefix="ext")
    try:
        with psycopg.connect(tc.dsn(name), autocommit=True) as conn:
            catalog.install(conn, mode="extension")
        error = refused((tc, name, b16, Binaries(installation / "bin"), new_dir))
        assert failed(error) == {f"{name}: extension_files": f"the installation in {installation / 'bin'} lacks "
                                                             f"pg_tviews {catalog.load().current} extension files"}
        assert "pg-tviews extension install --pg-config" in error.hint
    finally:
        tc.drop_database(name)
        shutil.rmtree(installation.parent)


def test_refuses_link_mode_across_file_systems(old):
    tc, _name, b16, b17, _new_dir = old
    other_fs = Path("/dev/shm")
    if not other_fs.is_dir() or other_fs.stat().st_dev == tc.cluster.datadir.stat().st_dev:
        pytest.skip("no second file system (/dev/shm) to put the new data directory on")
    new_dir = other_fs / f"pg_tviews-refusal-{os.getpid()}" / "new"
    error = refused((tc, _name, b16, b17, new_dir), method="link")
    assert "are on different file systems" in failed(error)["link"] and "--copy" in error.hint
    assert not new_dir.exists()


def test_a_failing_pg_upgrade_check_brings_the_old_cluster_back(old):
    """pg_upgrade's own checks run after ours: when they fail, the new data directory is removed,
    the old server runs again, the logs are kept and the journal says why."""
    tc, name, b16, b17, new_dir = old
    other = tc.create_database(prefix="reg")
    with psycopg.connect(tc.dsn(other), autocommit=True) as conn:
        conn.execute("CREATE TABLE uses_reg_types (f regproc)")  # pg_upgrade refuses reg* columns
    try:
        with pytest.raises(pgupgrade.UpgradeError, match="pg_upgrade --check failed") as caught:
            pgupgrade.major(str(b16.bindir), tc.cluster.datadir, str(b17.bindir), new_dir)
        message = str(caught.value)
        assert "reg* data types in user tables" in message
        listed = Path(message.split("is in the file: ")[1].split()[0])  # kept, not in the removed new directory
        assert "uses_reg_types" in listed.read_text()
        shutil.rmtree(Path(caught.value.hint.split("kept in ")[1].split(";")[0]))
        with psycopg.connect(tc.dsn(name), autocommit=True) as conn:
            entry = journal.history(conn)[-1]
        assert entry.result == "failed" and "reg" in entry.error
    finally:
        tc.drop_database(other)
