"""The catalog as a real PostgreSQL extension: the same chain of scripts, installed as files.

`pg-tviews extension install` writes pg_tviews.control and every pg_tviews--*.sql script into the
server's extension directory, so that CREATE EXTENSION pg_tviews [VERSION 'X'] and ALTER EXTENSION
pg_tviews UPDATE TO 'Y' work (PostgreSQL finds paths through the update scripts itself, down steps
included). Files must be installed in every installation that will run the database, including
the new one of a PostgreSQL major upgrade.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from . import chain as chain_mod

# No `schema =` line: the install script creates schema tviews itself, so that the schema is a
# member of the extension (dropped with it, not dumped on its own).
CONTROL = """# pg_tviews extension
comment = 'pg_tviews: transactional, incrementally maintained JSONB read models (TVIEWs)'
default_version = '{version}'
relocatable = false
superuser = true
"""


@dataclass
class InstalledFiles:
    directory: str
    files: list[str]
    default_version: str


def control_text() -> str:
    return CONTROL.format(version=chain_mod.load().current)


def sharedir(pg_config: str | None = None, explicit: str | None = None) -> Path:
    """The server installation's share directory: given, or asked from pg_config."""
    if explicit:
        return Path(explicit)
    tool = pg_config or shutil.which("pg_config")
    if not tool:
        raise UsageError("pg_config not found", hint="pass --pg-config /path/to/bin/pg_config or --sharedir DIR")
    try:
        out = subprocess.run([tool, "--sharedir"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise UsageError(f"cannot run {tool} --sharedir: {exc}", hint="pass --sharedir DIR") from None
    return Path(out)


def install_files(share: Path) -> InstalledFiles:
    """Write the control file and every script into `share`/extension."""
    directory = share / "extension"
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a PostgreSQL extension directory",
                         hint="give the share directory of the installation (pg_config --sharedir)")
    chain = chain_mod.load()
    written = []
    (directory / "pg_tviews.control").write_text(control_text())
    written.append("pg_tviews.control")
    for script in sorted([*chain.installs.values(), *chain.steps.values()], key=lambda s: s.name):
        shutil.copyfile(script.path, directory / script.name)
        written.append(script.name)
    return InstalledFiles(str(directory), written, chain.current)


def installed_versions(share: Path) -> list[str]:
    """Versions whose scripts are present in an installation (for upgrade checks)."""
    directory = share / "extension"
    if not (directory / "pg_tviews.control").exists():
        return []
    names = [p.name for p in directory.glob("pg_tviews--*.sql")]
    chain = chain_mod.load()
    return [v for v in chain.versions if any(n.endswith(f"--{v}.sql") for n in names)]
