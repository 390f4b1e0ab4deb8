"""Connection resolution order and connection errors."""

from __future__ import annotations

import pytest

from pg_tviews.connection import connect, resolve
from pg_tviews.errors import ConnectionFailed


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("PG_TVIEWS_DSN", "DATABASE_URL", "PGHOST", "PGDATABASE", "PGPORT", "PGUSER"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_explicit_dsn_wins(clean_env):
    clean_env.setenv("PG_TVIEWS_DSN", "dbname=from_env")
    assert resolve("dbname=explicit").dsn == "dbname=explicit"


def test_order_of_environment_variables(clean_env):
    clean_env.setenv("PGHOST", "libpq-host")
    assert resolve().source == "libpq PG* environment"
    clean_env.setenv("DATABASE_URL", "postgresql://h/url")
    assert resolve().dsn == "postgresql://h/url"
    clean_env.setenv("PG_TVIEWS_DSN", "postgresql://h/tviews")
    assert resolve().dsn == "postgresql://h/tviews"


def test_pgdatabase_alone_selects_libpq(clean_env):
    clean_env.setenv("PGDATABASE", "app")
    target = resolve()
    assert target.dsn == "" and "app" in target.describe()


def test_unreachable_server_is_one_clear_error(clean_env):
    with pytest.raises(ConnectionFailed) as info:
        connect("postgresql://someone@127.0.0.1:1/db")
    message = str(info.value)
    assert "127.0.0.1:1/db" in message and "refused" in message.lower()
    assert "\n" not in message


def test_connects_to_a_real_server(clean_env, db):
    with connect(db) as conn:
        assert conn.execute("SELECT current_setting('application_name')").fetchone()[0] == "pg_tviews"
