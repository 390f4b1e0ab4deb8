"""`pg-tviews migrate --from DSN --to DSN`: a database moved to another server, of any major
(typically old -> new), by dump and restore with the target major's tools, TVIEWs alive on arrival.

The dump is a pg-tviews backup (directory format, parallel jobs, a manifest of row counts and
sequences read in the dump's snapshot). The restore runs section by section: pre-data (schema),
data, post-data (indexes, constraints, then triggers). Triggers come last, so loading the data
fires no TVIEW maintenance and the TVIEW tables arrive exactly as dumped; the catalog and every
TVIEW's generated objects travel in the dump, so nothing is recreated. Two things pg_dump leaves
out are carried by the backup's restore: the extension's version (extension mode) and the
database's settings (the catalog relies on its search_path). Then every table's row count is
compared with the source's, sequences with theirs, every TVIEW with its definition, and a write
must reach each TVIEW; the run is journaled in the target database.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .. import catalog
from ..connection import Target
from ..errors import UpgradeError, UsageError
from . import backup, journal, liveness, tools
from .backup import Progress, _no_progress
from .checks import Check, Limits, run_checks
from .pgupgrade import Outcome, Step, Steps, refuse_if_failed
from .validate import Finding, sequences

#: owners of the database's objects and grantees of their privileges: roles the restore needs
ROLES_SQL = """
SELECT DISTINCT r.rolname FROM (
    SELECT c.relowner AS role FROM pg_catalog.pg_class c WHERE c.relnamespace IN (SELECT oid FROM user_schemas)
    UNION SELECT n.nspowner FROM user_schemas n
    UNION SELECT p.proowner FROM pg_catalog.pg_proc p WHERE p.pronamespace IN (SELECT oid FROM user_schemas)
    UNION SELECT (pg_catalog.aclexplode(c.relacl)).grantee FROM pg_catalog.pg_class c
     WHERE c.relacl IS NOT NULL AND c.relnamespace IN (SELECT oid FROM user_schemas)
    UNION SELECT (pg_catalog.aclexplode(n.nspacl)).grantee FROM user_schemas n WHERE n.nspacl IS NOT NULL
) o JOIN pg_catalog.pg_roles r ON r.oid = o.role
"""
USER_SCHEMAS = ("WITH user_schemas AS (SELECT oid, nspname, nspowner, nspacl FROM pg_catalog.pg_namespace"
                " WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_toast%'"
                " AND nspname NOT LIKE 'pg\\_temp\\_%')")
#: anything a fresh database does not have: user relations, functions, schemas, extensions
CONTENT_SQL = USER_SCHEMAS + """
SELECT (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace IN (SELECT oid FROM user_schemas))
     + (SELECT count(*) FROM pg_catalog.pg_proc WHERE pronamespace IN (SELECT oid FROM user_schemas))
     + (SELECT count(*) FROM user_schemas WHERE nspname <> 'public')
     + (SELECT count(*) FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql')
"""


@dataclass
class TableCount:
    table: str
    source: int
    target: int | None  # None: the table is missing on the target


@dataclass
class MigrationResult(Outcome):
    source: str  # host:port/dbname
    target: str
    source_version: str
    target_version: str
    database: str
    tools: str = ""  # the pg_dump/pg_restore used
    created: bool = False  # the target database was created by this run
    dump_dir: str | None = None  # kept only when given
    catalog_version: str | None = None
    catalog_mode: str | None = None
    checks: list[Check] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    tables: list[TableCount] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    journal_id: int | None = None
    result: str = "running"  # running, refused, failed, succeeded
    error: str | None = None


@dataclass
class _Source:
    major: int
    version: str
    database: str
    size: int
    encoding: str
    collate: str
    ctype: str
    found: catalog.InstalledCatalog
    roles: list[str]


def _source_facts(dsn: str) -> _Source:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        database, size, encoding, collate, ctype = conn.execute(
            "SELECT datname, pg_catalog.pg_database_size(oid), pg_catalog.pg_encoding_to_char(encoding), datcollate,"
            " datctype FROM pg_catalog.pg_database WHERE datname = current_database()").fetchone()
        roles = [r[0] for r in conn.execute(USER_SCHEMAS + ROLES_SQL)]
        return _Source(conn.info.server_version // 10000, conn.execute("SHOW server_version").fetchone()[0].split()[0],
                       database, size, encoding, collate, ctype, catalog.installed(conn), sorted(roles))


def migrate(source_dsn: str, target_dsn: str, *, jobs: int = 2, dump_dir: str | Path | None = None,
            limits: Limits = Limits(), progress: Progress = _no_progress) -> MigrationResult:
    """Move the database of `source_dsn` into the database of `target_dsn` (created when absent,
    refused when not empty); see the module notes."""
    source = _source_facts(source_dsn)
    database = conninfo_to_dict(target_dsn).get("dbname") or source.database
    target_dsn = make_conninfo(backup.libpq_dsn(target_dsn), dbname=database)
    admin_dsn = make_conninfo(target_dsn, dbname="postgres")
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as admin:
        target_major = admin.info.server_version // 10000
        result = MigrationResult(Target(source_dsn, "--from").describe(), Target(target_dsn, "--to").describe(),
                                 source.version, admin.execute("SHOW server_version").fetchone()[0].split()[0],
                                 database, catalog_version=source.found.version, catalog_mode=source.found.mode)
        if target_major < source.major:
            raise UsageError(f"the target runs PostgreSQL {result.target_version}, older than the source's "
                             f"{result.source_version}: pg_dump output is not guaranteed to load into an older major",
                             hint="migrate to a server of the source's major or newer")
        client = tools.for_server(target_major)
        result.tools = f"pg_dump/pg_restore {client.version[0]}.{client.version[1]} in {client.bindir}"
        exists = admin.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (database,)).fetchone()
        steps = Steps(result.steps, progress)
        with steps("pre-migration checks"):
            result.checks = _checks(source_dsn, source, admin, target_dsn, exists is not None, dump_dir, limits)
        refuse_if_failed(result)
        keep = dump_dir is not None
        work = Path(dump_dir) if keep else Path(tempfile.mkdtemp(prefix="pg_tviews-migrate-"))
        result.dump_dir = str(work) if keep else None
        try:
            with steps(f"dump with pg_dump {client.version[0]}"):
                backup.backup(source_dsn, work / "backup", jobs=jobs, bindir=str(client.bindir), progress=progress)
            manifest = backup.load_manifest(work / "backup")
            if exists is None:
                _create_database(admin, database, source)
                result.created = True
            with steps("restore: pre-data, data, post-data"):
                _target, outcome = backup._restore_into(
                    admin, target_dsn, manifest, work / "backup" / backup.ARCHIVE, database, jobs=jobs,
                    bindir=str(client.bindir), progress=progress, create=False, sections=True)
            if outcome.returncode != 0:
                raise UpgradeError(f"pg_restore failed: {_first_error(outcome.stderr)}",
                                   hint="the source is untouched" + ("; the target database was dropped"
                                                                     if result.created else
                                                                     f"; the target database {database} holds a "
                                                                     "partial restore: empty it and run again"))
        except BaseException as exc:
            result.result, result.error = "failed", str(exc)
            if result.created:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            raise
        finally:
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
    with psycopg.connect(target_dsn, autocommit=True) as conn:
        with steps("compare row counts"):
            result.tables, counted = _compare_counts(conn, manifest["counts"])
            result.findings.append(counted)
        with steps("sequences"):
            result.findings += _compare_sequences(conn, manifest.get("sequences", {}))
            if not source.found.installed:  # else validation below checks them
                result.findings += sequences(conn)
        if source.found.installed:
            with steps("validate TVIEWs"):
                found = catalog.installed(conn)
                if found.version != source.found.version:
                    result.findings.append(Finding("catalog", "fail", f"catalog {found.version} arrived, "
                                                   f"{source.found.version} left"))
                result.findings += liveness.check_database(conn)
        bad = [f for f in result.findings if f.status == "fail"]
        result.result = "succeeded"
        if bad:
            result.error = f"validation: {bad[0].message}" + (f" (and {len(bad) - 1} more failures)"
                                                              if len(bad) > 1 else "")
        if source.found.installed:
            result.journal_id = journal.start(conn, f"PostgreSQL {result.source_version}",
                                              f"PostgreSQL {result.target_version}",
                                              f"logical: pg_dump/pg_restore from {result.source}",
                                              [asdict(c) for c in result.checks], None)
            journal.finish(conn, result.journal_id, "succeeded", result.error)
    return result


def _first_error(stderr: str) -> str:
    """The cause, not the echo: with parallel jobs pg_restore ends on "a worker process died"."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if "error:" in line]
    if not errors:
        return lines[-1] if lines else "pg_restore failed"
    return " ".join(lines[errors[0]:errors[0] + 3])


def _checks(source_dsn: str, source: _Source, admin: psycopg.Connection, target_dsn: str, exists: bool,
            dump_dir: str | Path | None, limits: Limits) -> list[Check]:
    if limits.max_pending_queue is None:
        limits = dataclasses.replace(limits, max_pending_queue=0)
    skip = {"disk", "backup_tools", "extension_files"} | (set() if source.found.installed else {"catalog"})
    found = [Check(f"source: {c.name}", c.status, c.message, c.hint)
             for c in run_checks(source_dsn, limits=limits, skip=frozenset(skip)).checks]
    found.append(_target_database_check(target_dsn, exists))
    if source.found.mode == "extension":
        available = admin.execute("SELECT 1 FROM pg_catalog.pg_available_extension_versions"
                                  " WHERE name = 'pg_tviews' AND version = %s", (source.found.version,)).fetchone()
        found.append(Check("target: extension_files", "ok", f"the target has pg_tviews {source.found.version} "
                           "extension files") if available else Check(
            "target: extension_files", "fail", f"the target server lacks the pg_tviews {source.found.version} "
            "extension files (the source runs in extension mode)",
            "pg-tviews extension install --pg-config <target's bin>/pg_config"))
    missing = sorted(set(source.roles) - {r[0] for r in admin.execute(
        "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY (%s)", (source.roles,))})
    found.append(Check("target: roles", "fail", f"roles owning or granted objects are missing on the target: "
                       f"{', '.join(missing)}", "create them on the target first, e.g. pg_dumpall --roles-only "
                       "from the source into psql on the target (review it: it carries passwords)")
                 if missing else Check("target: roles", "ok", f"the target has the {len(source.roles)} roles needed"))
    found.append(_space_check("dump_disk", _existing(Path(dump_dir) if dump_dir else Path(tempfile.gettempdir())),
                              source.size, 1.0, "the dump"))
    directory = admin.execute("SELECT setting FROM pg_catalog.pg_settings WHERE name = 'data_directory'").fetchone()
    local = (admin.info.host or "").startswith("/") or admin.info.host in ("127.0.0.1", "localhost", "::1")
    if directory and directory[0] and local and Path(directory[0]).is_dir():
        found.append(_space_check("target: disk", Path(directory[0]), source.size, limits.disk_factor,
                                  "the target server"))
    else:
        found.append(Check("target: disk", "warn", f"the target's disk is not visible from here; the database is "
                           f"{source.size // 2**20} MiB", f"make sure the target has {limits.disk_factor:g}x that free"))
    return found


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _space_check(name: str, where: Path, size: int, factor: float, what: str) -> Check:
    free, needed, mib = shutil.disk_usage(where).free, int(size * factor), 2**20
    if free < needed:
        return Check(name, "fail", f"{free // mib} MiB free in {where} for {what}, {needed // mib} MiB needed "
                     f"({factor:g}x the source database's {size // mib} MiB)",
                     "free disk space" + (", or give --dump-dir on a larger file system" if name == "dump_disk" else ""))
    return Check(name, "ok", f"{free // mib} MiB free in {where} for {what} of a {size // mib} MiB database")


def _target_database_check(target_dsn: str, exists: bool) -> Check:
    name = conninfo_to_dict(target_dsn)["dbname"]
    if not exists:
        return Check("target: database", "ok", f"database {name} will be created")
    with psycopg.connect(target_dsn, autocommit=True, connect_timeout=10) as conn:
        objects = conn.execute(CONTENT_SQL).fetchone()[0]
    if objects:
        return Check("target: database", "fail", f"the target database {name} is not empty ({objects} objects)",
                     "migrate into a new database (name one that does not exist in --to), or drop this one first")
    return Check("target: database", "ok", f"database {name} exists and is empty")


def _create_database(admin: psycopg.Connection, name: str, source: _Source) -> None:
    admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
        sql.Identifier(name), sql.Literal(source.encoding), sql.Literal(source.collate), sql.Literal(source.ctype)))


def _compare_counts(conn: psycopg.Connection, expected: dict[str, int]) -> tuple[list[TableCount], Finding]:
    tables = []
    for table, count in sorted(expected.items()):
        try:
            with conn.transaction():
                actual = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(table))).fetchone()[0]
        except psycopg.errors.UndefinedTable:
            actual = None
        tables.append(TableCount(table, count, actual))
    wrong = [t for t in tables if t.target != t.source]
    if wrong:
        return tables, Finding("rows", "fail", f"{len(wrong)} tables differ: " + "; ".join(
            f"{t.table}: {t.source} rows on the source, {t.target if t.target is not None else 'no table'} on the target"
            for t in wrong[:5]), "see the table list of the report")
    return tables, Finding("rows", "ok", f"row counts of {len(tables)} tables match")


def _compare_sequences(conn: psycopg.Connection, expected: dict[str, int]) -> list[Finding]:
    """Each sequence at least where the source's was when the dump started."""
    behind = []
    for name, value in sorted(expected.items()):
        row = conn.execute("SELECT last_value FROM pg_catalog.pg_sequences"
                           " WHERE format('%%I.%%I', schemaname, sequencename) = %s", (name,)).fetchone()
        if row is None or row[0] is None or row[0] < value:
            behind.append(f"{name}: {value} on the source, {row[0] if row else 'missing'} on the target")
    if behind:
        return [Finding("sequences", "fail", "sequences behind the source: " + "; ".join(behind[:5]),
                        "SELECT setval(...) them to the source's values before writing")]
    return [Finding("sequences", "ok", f"{len(expected)} sequences carried at or past the source's values")]
