"""The embedded server and the Cluster class, against real PostgreSQL binaries."""

from __future__ import annotations

import psycopg
import pytest

import harness
from pg_tviews.errors import ServerError
from pg_tviews.server import Binaries, Cluster, embedded


@pytest.fixture
def scratch():
    path = harness.scratch_dir("pg_tviews-server-")
    yield path
    c = Cluster(path / "data", Binaries.embedded())
    c.stop(mode="immediate")
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def test_embedded_server_initialises_once_and_is_reused(scratch):
    first = embedded.ensure_running(scratch / "data")
    assert first.actions == ["initialized", "started"]
    assert first.running and first.url and first.version.startswith("18.")
    with psycopg.connect(first.url) as conn:
        assert conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()[0] == 18
    second = embedded.ensure_running(scratch / "data")
    assert second.actions == ["reused"]
    assert second.url == first.url and second.pid == first.pid
    stopped = embedded.stop(scratch / "data")
    assert stopped.actions == ["stopped"] and not stopped.running
    again = embedded.ensure_running(scratch / "data")
    assert again.actions == ["started"]  # the data directory is kept


def test_data_dir_from_environment(monkeypatch, scratch):
    monkeypatch.setenv(embedded.DATA_DIR_ENV, str(scratch / "from-env"))
    assert embedded.data_dir() == scratch / "from-env"
    assert embedded.data_dir(scratch / "explicit") == scratch / "explicit"


def test_directory_that_is_not_a_data_directory_is_refused(scratch):
    target = scratch / "data"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ServerError, match="not a PostgreSQL data directory"):
        embedded.ensure_running(target)
    assert (target / "notes.txt").read_text() == "mine"


def test_failed_initdb_leaves_nothing_behind(scratch):
    c = Cluster(scratch / "data", Binaries.embedded())
    with pytest.raises(ServerError, match="initdb failed"):
        c.init(initdb_args=["--encoding=NO_SUCH_ENCODING"])
    assert not (scratch / "data").exists()
    assert [p.name for p in scratch.iterdir()] == []


def test_occupied_port_is_avoided(scratch):
    c = Cluster(scratch / "data", Binaries.embedded())
    c.init()
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        c.configure({"port": str(blocker.getsockname()[1])})
        port = c.start()
        assert port != blocker.getsockname()[1]
    with psycopg.connect(c.dsn()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
