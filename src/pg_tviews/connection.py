"""Where pg_tviews connects, decided in one place for every command and the Python API.

Order: an explicit DSN (``--dsn``), then ``$PG_TVIEWS_DSN``, then ``$DATABASE_URL``, then the libpq
``PG*`` variables when ``PGHOST`` or ``PGDATABASE`` is set, else the embedded server (started on
first use).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .errors import ConnectionFailed

APPLICATION_NAME = "pg_tviews"


@dataclass(frozen=True)
class Target:
    """A resolved connection target: the conninfo string and where it came from."""

    dsn: str
    source: str

    def describe(self) -> str:
        """`host:port/dbname` as libpq would use it, for messages (never shows a password)."""
        info = _effective(self.dsn)
        host = info.get("host") or "localhost"
        return f"{host}:{info.get('port') or 5432}/{info.get('dbname') or info.get('user') or ''}"


def _effective(dsn: str) -> dict[str, str]:
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        params = {}
    env = {"host": "PGHOST", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER"}
    return {k: str(params.get(k) or os.environ.get(v) or "") for k, v in env.items()}


def resolve(dsn: str | None = None, *, data_dir: str | None = None, start_embedded: bool = True) -> Target:
    """Resolve the connection target; starts the embedded server when nothing else is configured."""
    if dsn:
        return Target(dsn, "--dsn")
    for var in ("PG_TVIEWS_DSN", "DATABASE_URL"):
        if os.environ.get(var):
            return Target(os.environ[var], f"${var}")
    if os.environ.get("PGHOST") or os.environ.get("PGDATABASE"):
        return Target("", "libpq PG* environment")
    from .server import embedded

    if start_embedded:
        status = embedded.ensure_running(data_dir)
    else:
        status = embedded.status(data_dir)
    if not status.url:
        raise ConnectionFailed(
            f"the embedded server in {status.data_dir} is not running",
            hint="start it with `pg-tviews server start`",
        )
    return Target(status.url, f"embedded server ({status.data_dir})")


def connect(target: Target | str | None = None, *, autocommit: bool = False, **kwargs) -> psycopg.Connection:
    """Open a connection; a failure becomes one clear ConnectionFailed naming host and port."""
    if not isinstance(target, Target):
        target = resolve(target)
    kwargs.setdefault("application_name", APPLICATION_NAME)
    kwargs.setdefault("connect_timeout", 10)
    try:
        return psycopg.connect(target.dsn, autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        reason = _reason(exc)
        raise ConnectionFailed(
            f"cannot connect to {target.describe()} (from {target.source}): {reason}",
            hint="check the host and port, that the server is running, and the credentials",
        ) from exc


def _reason(exc: Exception) -> str:
    """The useful part of a libpq connection error: `Connection refused`, `password authentication …`."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0]
    return first.rsplit("failed: ", 1)[-1].strip() or first
