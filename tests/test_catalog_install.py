"""Installing the catalog: versions, idempotence, refusals, transactionality."""

from __future__ import annotations

import pytest

from pg_tviews import catalog
from pg_tviews.errors import CatalogError


def test_install_is_idempotent_and_reports_version(conn):
    assert not catalog.installed(conn).installed
    first = catalog.install(conn)
    assert first.changed and first.version == catalog.load().current and first.mode == "schema"
    assert conn.execute("SELECT tviews.pg_tviews_version()").fetchone()[0] == first.version
    second = catalog.install(conn)
    assert not second.changed and second.version == first.version
    rows = conn.execute("SELECT script, direction FROM tviews.schema_migration ORDER BY id").fetchall()
    assert [name for name, _d in rows] == first.applied
    assert [d for _n, d in rows] == ["install"] + ["up"] * (len(rows) - 1)


def test_unknown_version_is_refused(conn):
    with pytest.raises(CatalogError, match="unknown pg_tviews catalog version '9.9.9'") as info:
        catalog.install(conn, "9.9.9")
    assert "known versions" in info.value.hint


def test_foreign_tviews_schema_is_refused_and_left_alone(conn):
    conn.execute("CREATE SCHEMA tviews; CREATE TABLE tviews.mine (x int)")
    with pytest.raises(CatalogError, match="holds no pg_tviews catalog"):
        catalog.install(conn)
    assert conn.execute("SELECT to_regclass('tviews.mine') IS NOT NULL").fetchone()[0]


def test_install_inside_callers_transaction_rolls_back_with_it(conn):
    with pytest.raises(RuntimeError):
        with conn.transaction():
            catalog.install(conn)
            assert catalog.installed(conn).installed
            raise RuntimeError("caller fails")
    assert not catalog.installed(conn).installed
