"""`pg-tviews backup` and `pg-tviews backup verify`: backups proven by restoring them.

A backup is a pg_dump directory-format archive plus a manifest: the row count of every table and
the pg_tviews catalog (version, mode, TVIEWs), all read in the very snapshot the dump is taken
from (exported and handed to pg_dump). Verification restores the archive into a scratch database,
compares every count, checks that every TVIEW equals its definition there, and drops it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .. import catalog
from ..errors import CheckFailed, UpgradeError, UsageError
from . import tools
from .validate import Finding, consistency

MANIFEST = "manifest.json"
ARCHIVE = "dump"

#: progress(what, done, total): what is being done, how far
Progress = Callable[[str, int, int], None]


def _no_progress(what: str, done: int, total: int) -> None:
    pass


@dataclass
class BackupResult:
    directory: str
    database: str
    server_version: str
    catalog_version: str | None
    catalog_mode: str | None
    tables: int
    rows: int
    duration_s: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class VerifyResult:
    directory: str
    scratch_database: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.status != "fail" for f in self.findings)

    def as_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}


def libpq_dsn(dsn: str) -> str:
    """The DSN without parameters that older libpq (of older client tools) rejects."""
    params = {k: v for k, v in conninfo_to_dict(dsn).items() if k not in ("sslcertmode",)}
    return make_conninfo(**params)


def backup(dsn: str, directory: str | Path, *, jobs: int = 2, bindir: str | None = None,
           progress: Progress = _no_progress) -> BackupResult:
    """Dump the database into `directory` (which must not exist or be empty), with a manifest."""
    started = dt.datetime.now(dt.timezone.utc)
    target = Path(directory)
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} exists and is not empty", hint="give a new directory for the backup")
    target.mkdir(parents=True, exist_ok=True)
    with psycopg.connect(dsn) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        server_version = conn.execute("SHOW server_version").fetchone()[0]
        major = conn.info.server_version // 10000
        database = conn.info.dbname
        found = catalog.installed(conn)
        tables = [r[0] for r in conn.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
            " ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'"
            # commit slots are runtime state of this cluster's transactions, not data (an extension
            # does not dump them)
            " AND (n.nspname, c.relname) <> ('tviews', 'commit_slot')"
            " ORDER BY 1")]
        counts = {}
        for index, table in enumerate(tables):
            progress("counting rows", index, len(tables))
            counts[table] = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(table))).fetchone()[0]
        progress("counting rows", len(tables), len(tables))
        # sequences are not transactional: these are lower bounds of what pg_dump will record (it
        # leaves out members of extensions not registered with pg_extension_config_dump)
        sequences = {r[0]: r[1] for r in conn.execute(
            "SELECT format('%I.%I', s.schemaname, s.sequencename), s.last_value FROM pg_catalog.pg_sequences s"
            " WHERE s.last_value IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d"
            "   JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid"
            "  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'e'"
            "    AND d.objid = format('%I.%I', s.schemaname, s.sequencename)::regclass"
            "    AND NOT d.objid = ANY (coalesce(e.extconfig, '{}'))) ORDER BY 1")}
        settings = [r[0] for r in conn.execute(
            "SELECT unnest(s.setconfig) FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_database d"
            " ON d.oid = s.setdatabase WHERE d.datname = current_database() AND s.setrole = 0")]
        tviews = []
        if found.installed:
            tviews = [dict(zip(("schema", "table", "key", "mode", "definition"), r)) for r in conn.execute(
                "SELECT schema_name, table_name, key_column, mode, definition FROM tviews.entity ORDER BY id")]
        client = tools.for_server(major, bindir)
        _run_dump(client, dsn, target / ARCHIVE, snapshot, jobs, len(tables), progress)
        conn.execute("COMMIT")
    manifest = {
        "format": 1,
        "created_at": started.isoformat(),
        "database": database,
        "server_version": server_version,
        "pg_dump": str(client.tool("pg_dump")),
        "pg_dump_major": client.major,
        "catalog": {"version": found.version, "mode": found.mode, "tviews": tviews},
        "counts": counts,
        "sequences": sequences,
        "database_settings": settings,
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2))
    duration = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
    return BackupResult(str(target), database, server_version, found.version, found.mode, len(counts),
                        sum(counts.values()), duration)


def _run_dump(client, dsn: str, archive: Path, snapshot: str, jobs: int, tables: int, progress: Progress) -> None:
    command = [str(client.tool("pg_dump")), "--format=directory", f"--jobs={jobs}", f"--snapshot={snapshot}",
               "--verbose", f"--file={archive}", f"--dbname={libpq_dsn(dsn)}"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dumped, log = 0, []
    for line in proc.stderr:
        log.append(line)
        if re.search(r"(finished item|dumping contents of table)", line):
            dumped += 1
            progress("dumping tables", min(dumped, tables), tables)
    if proc.wait() != 0:
        tail = "".join(log[-5:]).strip()
        raise UpgradeError(f"pg_dump failed: {tail}", hint="nothing was backed up; see the message above")
    progress("dumping tables", tables, tables)


def load_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckFailed(f"{path} is missing: not a pg-tviews backup, or an incomplete one",
                          hint="back up again with `pg-tviews backup`") from None
    except json.JSONDecodeError as exc:
        raise CheckFailed(f"{path} is damaged: {exc}", hint="back up again with `pg-tviews backup`") from None


@dataclass
class RestoreResult:
    directory: str
    database: str

    def as_dict(self) -> dict:
        return asdict(self)


#: pg_restore's sections, in the order a restore runs them
SECTIONS = ("pre-data", "data", "post-data")


def _restore_into(admin: psycopg.Connection, dsn: str, manifest: dict, archive: Path, database: str, *,
                  jobs: int, bindir: str | None, progress: Progress, create: bool = True,
                  sections: bool = False) -> tuple[str, subprocess.CompletedProcess]:
    """Create `database` (unless `create` is false: it exists and is empty) and restore the
    archive into it; returns its DSN and pg_restore's outcome (of the first section that failed).

    pg_dump records CREATE EXTENSION without a version, so in extension mode the extension is
    created first at the backed-up version. With `sections`, pg_restore runs once per section
    (schema, then data, then indexes, constraints and triggers), each reported as a step."""
    client = tools.for_server(max(admin.info.server_version // 10000, manifest.get("pg_dump_major", 0)), bindir)
    if create:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(database)))
    target = make_conninfo(libpq_dsn(dsn), dbname=database)
    extension_mode = (manifest.get("catalog") or {}).get("mode") == "extension"
    if extension_mode:
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE EXTENSION pg_tviews VERSION {}").format(
                sql.Literal(manifest["catalog"]["version"])))
    # pg_dump leaves out ALTER DATABASE ... SET (the catalog relies on the search_path one).
    # The stored text is the flattened value: set it in this session, then store it FROM CURRENT.
    for setting in manifest.get("database_settings", []):
        name, _, value = setting.partition("=")
        admin.execute("SELECT pg_catalog.set_config(%s, %s, false)", (name, value))
        guc = sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))
        admin.execute(sql.SQL("ALTER DATABASE {} SET {} FROM CURRENT").format(sql.Identifier(database), guc))
        admin.execute(sql.SQL("RESET {}").format(guc))
    command = [str(client.tool("pg_restore")), "--exit-on-error", f"--jobs={jobs}", f"--dbname={target}"]
    # In extension mode the catalog's tables and their foreign keys exist before their data arrives
    # (CREATE EXTENSION made them), and pg_dump does not order that data by the keys: parallel
    # jobs break them at random. The dump is consistent, so the data section loads with
    # foreign-key triggers off (session_replication_role: superuser only, as is the extension).
    for section in SECTIONS if sections or extension_mode else (None,):
        what = f"restoring {section}" if section else "restoring"
        env = None
        if section == "data" and extension_mode:
            env = dict(os.environ, PGOPTIONS=f"{os.environ.get('PGOPTIONS', '')} -c session_replication_role=replica")
        progress(what, 0, 1)
        outcome = subprocess.run([*command, *([f"--section={section}"] if section else []), str(archive)],
                                 capture_output=True, text=True, env=env)
        progress(what, 1, 1)
        if outcome.returncode != 0:
            break
    return target, outcome


def restore(dsn: str, directory: str | Path, *, database: str | None = None, jobs: int = 2,
            bindir: str | None = None, progress: Progress = _no_progress) -> RestoreResult:
    """Restore a backup into a new database next to the current one (never over it): the operator
    switches the application when satisfied. Returns the new database's name."""
    manifest = load_manifest(directory)
    name = database or f"{manifest['database']}_restored_{dt.datetime.now():%Y%m%d%H%M%S}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        _target, outcome = _restore_into(admin, dsn, manifest, Path(directory) / ARCHIVE, name, jobs=jobs,
                                         bindir=bindir, progress=progress)
        if outcome.returncode != 0:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            message = (outcome.stderr.strip().splitlines() or ["pg_restore failed"])[-1]
            raise UpgradeError(f"the backup in {directory} does not restore: {message}",
                               hint="nothing was changed; the current database is untouched")
    return RestoreResult(str(directory), name)


def verify(dsn: str, directory: str | Path, *, jobs: int = 2, bindir: str | None = None,
           progress: Progress = _no_progress) -> VerifyResult:
    """Restore the backup into a scratch database on the server of `dsn`, compare, drop it."""
    manifest = load_manifest(directory)
    scratch = f"pg_tviews_verify_{secrets.token_hex(4)}"
    result = VerifyResult(str(directory), scratch)
    with psycopg.connect(dsn, autocommit=True) as admin:
        try:
            scratch_dsn, restore_outcome = _restore_into(admin, dsn, manifest, Path(directory) / ARCHIVE, scratch,
                                                         jobs=jobs, bindir=bindir, progress=progress)
            if restore_outcome.returncode != 0:
                message = (restore_outcome.stderr.strip().splitlines() or ["pg_restore failed"])[-1]
                result.findings.append(Finding("restore", "fail", f"the archive does not restore: {message}",
                                               "back up again; this backup is damaged or incomplete"))
                return result
            result.findings.append(Finding("restore", "ok", "the archive restores"))
            backed_up = (manifest.get("catalog") or {}).get("version")
            with psycopg.connect(scratch_dsn, autocommit=True) as conn:
                result.findings += _compare_counts(conn, manifest["counts"], progress)
                found = catalog.installed(conn)
                if found.version != backed_up:
                    result.findings.append(Finding("catalog", "fail",
                                                   f"catalog {found.version} restored, {backed_up} backed up"))
                elif found.installed:
                    result.findings.append(Finding("catalog", "ok", f"catalog {found.version} ({found.mode} mode)"))
                    result.findings += consistency(conn)
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
    return result


def _compare_counts(conn: psycopg.Connection, expected: dict[str, int], progress: Progress) -> list[Finding]:
    findings, wrong = [], []
    for index, (table, count) in enumerate(sorted(expected.items())):
        progress("comparing row counts", index, len(expected))
        try:
            with conn.transaction():
                actual = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(table))).fetchone()[0]
        except psycopg.errors.UndefinedTable:
            actual = None
        if actual != count:
            wrong.append(f"{table}: {count} rows backed up, {actual if actual is not None else 'no table'} restored")
    progress("comparing row counts", len(expected), len(expected))
    if wrong:
        findings.append(Finding("rows", "fail", f"{len(wrong)} tables differ: " + "; ".join(wrong[:5]),
                                "back up again; this backup is damaged or incomplete"))
    else:
        findings.append(Finding("rows", "ok", f"row counts of {len(expected)} tables match"))
    return findings
