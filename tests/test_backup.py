"""Backups with a manifest, verified by restoring them into a scratch database."""

from __future__ import annotations

import json
import shutil

import psycopg
import pytest

import harness
import workload
from oracle import assert_exact
from pg_tviews import catalog
from pg_tviews.errors import CheckFailed
from pg_tviews.upgrade import backup


@pytest.fixture
def backup_dir():
    path = harness.scratch_dir("pg_tviews-backup-")
    yield path / "backup"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def populated(tvconn):
    workload.setup(tvconn, "immediate")
    return tvconn


def test_backup_then_verify(pg, populated, backup_dir):
    dsn = populated.info.dsn
    result = backup.backup(dsn, backup_dir, jobs=2)
    assert result.catalog_version == catalog.load().current and result.tables >= 7 and result.rows > 0
    manifest = json.loads((backup_dir / backup.MANIFEST).read_text())
    assert manifest["counts"]["public.tv_post"] == populated.execute("SELECT count(*) FROM tv_post").fetchone()[0]
    assert [t["table"] for t in manifest["catalog"]["tviews"]] == ["tv_post", "tv_user", "tv_feed"]
    verified = backup.verify(dsn, backup_dir)
    assert verified.ok, verified.findings
    assert {f.check for f in verified.findings} >= {"restore", "rows", "catalog", "consistency"}
    assert populated.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'pg_tviews_verify_%'").fetchone()[0] == 0


def test_verify_detects_a_damaged_archive(pg, populated, backup_dir):
    dsn = populated.info.dsn
    backup.backup(dsn, backup_dir)
    largest = max((backup_dir / backup.ARCHIVE).glob("*.dat*"), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
    verified = backup.verify(dsn, backup_dir)
    assert not verified.ok
    assert [f.check for f in verified.findings if f.status == "fail"] == ["restore"]


def test_verify_detects_an_incomplete_backup(pg, populated, backup_dir):
    dsn = populated.info.dsn
    backup.backup(dsn, backup_dir)
    (backup_dir / backup.MANIFEST).unlink()
    with pytest.raises(CheckFailed, match="manifest.json is missing"):
        backup.verify(dsn, backup_dir)


def test_verify_detects_missing_rows(pg, populated, backup_dir):
    dsn = populated.info.dsn
    backup.backup(dsn, backup_dir)
    manifest = json.loads((backup_dir / backup.MANIFEST).read_text())
    manifest["counts"]["public.tb_comment"] += 1  # the dump holds fewer rows than the database had
    (backup_dir / backup.MANIFEST).write_text(json.dumps(manifest))
    verified = backup.verify(dsn, backup_dir)
    failed = [f for f in verified.findings if f.status == "fail"]
    assert [f.check for f in failed] == ["rows"] and "tb_comment" in failed[0].message


def test_backup_refuses_a_non_empty_directory(pg, populated, backup_dir):
    backup_dir.mkdir()
    (backup_dir / "something").write_text("x")
    with pytest.raises(Exception, match="not empty"):
        backup.backup(populated.info.dsn, backup_dir)


def test_restore_into_a_new_database(pg, populated, backup_dir):
    dsn = populated.info.dsn
    backup.backup(dsn, backup_dir)
    populated.execute("UPDATE tb_user SET name = 'after the backup' WHERE pk_user = 1")
    restored = backup.restore(dsn, backup_dir)
    with psycopg.connect(pg.dsn(restored.database), autocommit=True) as copy:
        assert "tviews" in copy.execute("SHOW search_path").fetchone()[0]  # database settings come along
        assert copy.execute("SELECT name FROM tb_user WHERE pk_user = 1").fetchone()[0] != "after the backup"
        copy.execute("UPDATE tb_user SET name = 'restored' WHERE pk_user = 1")
        assert_exact(copy, *workload.TVIEWS)
    pg.drop_database(restored.database)
