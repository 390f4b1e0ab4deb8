"""Installing the catalog (schema ``tviews``) and telling which version is installed.

Two install modes end in the same catalog: *extension* (``CREATE EXTENSION pg_tviews``, when the
extension files are installed on the server) and *schema* (the same scripts applied by this
module, for managed PostgreSQL where no files can be installed). In schema mode every applied
script is recorded in ``tviews.schema_migration``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import psycopg
import psycopg.sql

from ..errors import CatalogError
from . import chain as chain_mod

SCHEMA = "tviews"
#: advisory lock serialising catalog changes (install, upgrade, downgrade) in one database
CATALOG_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('pg_tviews.catalog'))"


@dataclass
class InstalledCatalog:
    version: str | None
    mode: str | None  # "extension", "schema" or None when not installed

    @property
    def installed(self) -> bool:
        return self.version is not None


@dataclass
class InstallResult:
    version: str
    mode: str
    previous: str | None
    applied: list[str] = field(default_factory=list)
    search_path: str | None = None  # what was done to make the SQL API reachable

    @property
    def changed(self) -> bool:
        return bool(self.applied)

    def as_dict(self) -> dict:
        return asdict(self) | {"changed": self.changed}


def installed(conn: psycopg.Connection) -> InstalledCatalog:
    """Which catalog version is installed in the connected database, and how."""
    row = conn.execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_tviews'").fetchone()
    if row:
        return InstalledCatalog(row[0], "extension")
    has_function = conn.execute(
        "SELECT to_regprocedure('tviews.pg_tviews_version()') IS NOT NULL"
    ).fetchone()[0]
    if not has_function:
        return InstalledCatalog(None, None)
    return InstalledCatalog(conn.execute("SELECT tviews.pg_tviews_version()").fetchone()[0], "schema")


def require(conn: psycopg.Connection) -> InstalledCatalog:
    """The installed catalog, or a CatalogError telling how to install it."""
    found = installed(conn)
    if not found.installed:
        raise CatalogError(
            "pg_tviews is not installed in this database",
            hint="run `pg-tviews install` (or CREATE EXTENSION pg_tviews)",
        )
    return found


def apply_scripts(conn: psycopg.Connection, scripts: list[chain_mod.Script]) -> None:
    """Run migration scripts in order and record each in tviews.schema_migration (schema mode)."""
    for script in scripts:
        try:
            conn.execute(script.sql)
        except psycopg.Error as exc:
            raise CatalogError(
                f"migration script {script.name} failed: {str(exc).strip()}",
                hint="nothing was changed; the catalog stays at its previous version",
            ) from exc
        conn.execute(
            "INSERT INTO tviews.schema_migration (script, from_version, to_version, direction, checksum)"
            " VALUES (%s, %s, %s, %s, %s)",
            (script.name, script.source, script.target, script.direction, script.checksum),
        )


MODES = ("schema", "extension")


def install(conn: psycopg.Connection, version: str | None = None, *, mode: str = "schema") -> InstallResult:
    """Install the catalog at `version` (default: current); idempotent.

    mode "schema" applies the chain's scripts from here (works on managed PostgreSQL); mode
    "extension" runs CREATE EXTENSION, which needs the extension files in the server's installation
    (`pg-tviews extension install`). Runs in one transaction (a savepoint when the caller already
    has one open) under an advisory lock, so a failure leaves the database as it was and concurrent
    installs wait for each other. Installing over a different installed version is refused: that is
    an upgrade or a downgrade.
    """
    chain = chain_mod.load()
    target = version or chain.current
    chain.check_known(target)
    if mode not in MODES:
        raise CatalogError(f"unknown install mode {mode!r}", hint="use schema or extension")
    with conn.transaction():
        conn.execute(CATALOG_LOCK_SQL)
        found = installed(conn)
        if found.installed:
            if found.version != target:
                raise CatalogError(
                    f"pg_tviews {found.version} is already installed ({found.mode} mode); "
                    f"refusing to install {target} over it",
                    hint=f"use `pg-tviews upgrade run --to {target}` to change versions",
                )
            return InstallResult(target, found.mode or "schema", found.version)
        exists = conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (SCHEMA,)).fetchone()[0]
        if exists:
            raise CatalogError(
                f"schema {SCHEMA} exists but holds no pg_tviews catalog",
                hint=f"rename or drop the schema {SCHEMA} first; pg_tviews needs it",
            )
        if mode == "extension":
            available = conn.execute(
                "SELECT 1 FROM pg_catalog.pg_available_extension_versions WHERE name = 'pg_tviews' AND version = %s",
                (target,),
            ).fetchone()
            if available is None:
                raise CatalogError(
                    f"the server has no pg_tviews {target} extension files",
                    hint="install them with `pg-tviews extension install --pg-config .../pg_config`, "
                         "or install in schema mode",
                )
            conn.execute(psycopg.sql.SQL("CREATE EXTENSION pg_tviews VERSION {}").format(psycopg.sql.Literal(target)))
            applied = [f"CREATE EXTENSION pg_tviews VERSION '{target}'"]
        else:
            scripts = chain.install_path(target)
            apply_scripts(conn, scripts)
            applied = [s.name for s in scripts]
    return InstallResult(target, mode, None, applied, ensure_search_path(conn))


def ensure_search_path(conn: psycopg.Connection) -> str:
    """Put schema tviews on the database's default search_path, so that the SQL API
    (pg_tviews_version(), pg_tviews_metadata, ...) is reachable without qualification in new
    sessions. Returns what was done; a missing privilege is reported, not raised."""
    dbname, current = conn.execute(
        "SELECT current_database(), (SELECT s.cfg FROM pg_catalog.pg_db_role_setting r,"
        "   unnest(r.setconfig) s(cfg) WHERE r.setrole = 0"
        "   AND r.setdatabase = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())"
        "   AND s.cfg LIKE 'search_path=%%')"
    ).fetchone()
    value = current.split("=", 1)[1] if current else '"$user", public'
    if SCHEMA in [part.strip().strip('"') for part in value.split(",")]:
        return f"search_path of database {dbname} already includes {SCHEMA}"
    new_value = f"{value}, {SCHEMA}"
    try:
        with conn.transaction():
            conn.execute(f"ALTER DATABASE {psycopg.sql.Identifier(dbname).as_string(conn)} SET search_path = {new_value}")
    except psycopg.errors.InsufficientPrivilege:
        return (f"could not add {SCHEMA} to the search_path of database {dbname} (not its owner): "
                f"run ALTER DATABASE ... SET search_path = {new_value}, or qualify the API as {SCHEMA}.pg_tviews_*")
    return f"search_path of database {dbname} is now {new_value} (new sessions)"
