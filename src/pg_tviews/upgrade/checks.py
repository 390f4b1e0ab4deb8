"""`pg-tviews upgrade check`: is this database ready for an upgrade? Each check says ok, warn or
fail, with a message and a hint; any fail refuses the upgrade."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg

from .. import catalog
from ..catalog import chain as chain_mod
from ..catalog import extension
from ..errors import TViewError
from ..server.cluster import Binaries
from . import tools

SUPPORTED_MAJORS = (15, 16, 17, 18)


@dataclass
class Check:
    name: str
    status: str  # ok, warn, fail
    message: str
    hint: str | None = None


@dataclass
class CheckReport:
    target_version: str | None
    checks: list[Check] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat())
    report_path: str | None = None

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def as_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}

    def as_journal(self) -> list[dict]:
        return [asdict(c) for c in self.checks]


@dataclass
class Limits:
    """Thresholds of the checks (the defaults are what operators want; tests tighten them)."""

    supported_majors: tuple[int, ...] = SUPPORTED_MAJORS
    disk_factor: float = 2.0
    #: free space a pg_upgrade in link mode needs, as a fraction of the old data directory's size
    #: (new catalogs, WAL and logs; the data files are shared)
    link_disk_factor: float = 0.05
    min_memory_bytes: int = 256 * 1024 * 1024
    queue_age_warn_s: float = 300.0
    #: pending async queue items allowed (None: any; a PostgreSQL upgrade wants 0, a drained queue)
    max_pending_queue: int | None = None


def run_checks(
    dsn: str,
    to_version: str | None = None,
    *,
    target_bindir: str | None = None,
    sample: int | None = 100,
    limits: Limits = Limits(),
    pg_dump_bindir: str | None = None,
    skip: frozenset[str] = frozenset(),
) -> CheckReport:
    """Every check but those named in `skip` (a caller that checks the same thing its own way,
    e.g. disk space for pg_upgrade); a connection failure is itself a failed check."""
    report = CheckReport(to_version)
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreachable"
        report.checks.append(Check("connection", "fail", f"cannot connect: {reason}",
                                   "check --dsn, that the server runs and accepts connections"))
        return report
    with conn:
        def add(check: Check) -> None:
            if check.name not in skip:
                report.checks.append(check)

        add(Check("connection", "ok", f"connected to {conn.info.host}:{conn.info.port}/{conn.info.dbname}"))
        major = conn.info.server_version // 10000
        version = conn.execute("SHOW server_version").fetchone()[0]
        if major in limits.supported_majors:
            add(Check("postgresql", "ok", f"PostgreSQL {version} is supported"))
        else:
            add(Check("postgresql", "fail", f"PostgreSQL {version} is not supported",
                      f"supported majors: {', '.join(map(str, limits.supported_majors))}"))
        found = catalog.installed(conn)
        add(_catalog_check(found, to_version))
        if found.installed:
            add(_extension_files_check(conn, found, to_version, target_bindir))
            add(_consistency_check(conn, sample))
            add(_errors_check(conn))
            add(_queue_check(conn, limits))
        add(_prepared_check(conn))
        add(_disk_check(conn, limits))
        if "backup_tools" not in skip:  # looking for tools runs every installation's binaries
            add(_tools_check(major, pg_dump_bindir))
        add(_resources_check(limits))
    return report


def write_report(report: CheckReport, path: str | Path | None = None) -> str:
    """Write the report as JSON (default: pg_tviews-upgrade-check-<time>.json here)."""
    if path is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path.cwd() / f"pg_tviews-upgrade-check-{stamp}.json"
    report.report_path = str(path)
    Path(path).write_text(json.dumps(report.as_dict(), indent=2, default=str))
    return str(path)


def _catalog_check(found: catalog.InstalledCatalog, to_version: str | None) -> Check:
    chain = chain_mod.load()
    if not found.installed:
        return Check("catalog", "fail", "pg_tviews is not installed in this database",
                     "install it with `pg-tviews install`")
    if found.version not in chain.versions:
        return Check("catalog", "fail", f"installed version {found.version} is unknown to this pg-tviews",
                     f"this pg-tviews knows {', '.join(chain.versions)}")
    target = to_version or chain.current
    try:
        steps = chain.path(found.version, target)
    except TViewError as exc:
        return Check("catalog", "fail", f"{found.version} ({found.mode} mode) cannot reach {target}: {exc}", exc.hint)
    what = f"{len(steps)} steps" if steps else "already there"
    return Check("catalog", "ok", f"pg_tviews {found.version} ({found.mode} mode); {target}: {what}")


def _extension_files_check(conn, found: catalog.InstalledCatalog, to_version: str | None,
                           target_bindir: str | None) -> Check:
    target = to_version or chain_mod.load().current
    if target_bindir:
        share = Binaries(Path(target_bindir)).sharedir()
        versions = extension.installed_versions(share)
        if found.mode == "extension" and found.version not in versions:
            return Check("extension_files", "fail",
                         f"the installation in {target_bindir} lacks pg_tviews {found.version} extension files",
                         f"pg-tviews extension install --pg-config {target_bindir}/pg_config")
        return Check("extension_files", "ok" if found.mode != "extension" or versions else "warn",
                     f"the installation in {target_bindir} has pg_tviews versions: {', '.join(versions) or 'none'}")
    if found.mode != "extension":
        return Check("extension_files", "ok", "schema mode: no extension files needed")
    available = {r[0] for r in conn.execute(
        "SELECT version FROM pg_catalog.pg_available_extension_versions WHERE name = 'pg_tviews'")}
    if target not in available:
        return Check("extension_files", "fail", f"the server has no pg_tviews {target} extension files",
                     "pg-tviews extension install --pg-config /path/to/pg_config")
    return Check("extension_files", "ok", f"extension files for {target} are installed")


def _consistency_check(conn, sample: int | None) -> Check:
    rows = conn.execute("SELECT message FROM tviews.pg_tviews_health_check(%s) WHERE component = 'drift'"
                        " AND status = 'fail'", (sample or 0,)).fetchall() if _has_health(conn) else \
        _full_drift(conn)
    scope = f"a sample of {sample} keys per TVIEW" if sample else "every row"
    if rows:
        return Check("consistency", "fail", "; ".join(r[0] for r in rows),
                     "repair with `pg-tviews verify --repair` before upgrading")
    return Check("consistency", "ok", f"every TVIEW equals its definition ({scope})")


def _has_health(conn) -> bool:
    return conn.execute("SELECT to_regprocedure('tviews.pg_tviews_health_check(integer)') IS NOT NULL").fetchone()[0]


def _full_drift(conn) -> list[tuple[str]]:
    from .validate import consistency

    return [(f.message,) for f in consistency(conn) if f.status == "fail"]


def _errors_check(conn) -> Check:
    rows = conn.execute("SELECT tview, last_error FROM tviews.pg_tviews_stats WHERE last_error IS NOT NULL").fetchall()
    if rows:
        return Check("tview_errors", "warn", "TVIEWs with recorded errors: " + "; ".join(f"{t}: {e}" for t, e in rows),
                     "see `pg-tviews stats`; refresh or fix them before upgrading")
    return Check("tview_errors", "ok", "no recorded refresh errors")


def _queue_check(conn, limits: Limits) -> Check:
    pending, oldest, failed = conn.execute(
        "SELECT count(*) FILTER (WHERE processed_at IS NULL AND NOT failed),"
        "       extract(epoch FROM clock_timestamp() - min(created_at) FILTER (WHERE processed_at IS NULL AND NOT failed)),"
        "       count(*) FILTER (WHERE failed) FROM tviews.pg_tviews_queue").fetchone()
    if failed:
        return Check("queue", "fail", f"{failed} queue items failed permanently",
                     "see pg_tviews_queue.error_message; fix and retry, or delete them")
    if limits.max_pending_queue is not None and pending > limits.max_pending_queue:
        return Check("queue", "fail", f"{pending} pending queue items; the async queue must be drained first",
                     "drain it with `pg-tviews queue --drain` (or let the worker finish), then run again")
    if pending and oldest and oldest > limits.queue_age_warn_s:
        return Check("queue", "warn", f"{pending} pending queue items, the oldest {oldest:.0f} s old",
                     "is the worker running? drain with `pg-tviews queue --drain`")
    return Check("queue", "ok", f"{pending} pending queue items")


def _prepared_check(conn) -> Check:
    count = conn.execute("SELECT count(*) FROM pg_catalog.pg_prepared_xacts WHERE database = current_database()"
                         ).fetchone()[0]
    if count:
        return Check("prepared_transactions", "fail", f"{count} prepared transactions are open",
                     "COMMIT PREPARED or ROLLBACK PREPARED them first (they hold TVIEW locks)")
    return Check("prepared_transactions", "ok", "no prepared transactions")


def _disk_check(conn, limits: Limits) -> Check:
    size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    try:
        directory = conn.execute("SHOW data_directory").fetchone()[0]
    except psycopg.Error:
        directory = None
    if not directory or not os.path.isdir(directory):
        return Check("disk", "warn", f"database size {size // 2**20} MiB; the server's disk is not visible from here",
                     f"make sure it has at least {limits.disk_factor:g}x that free")
    free = shutil.disk_usage(directory).free
    needed = int(size * limits.disk_factor)
    if free < needed:
        return Check("disk", "fail", f"{free // 2**20} MiB free, {needed // 2**20} MiB needed "
                     f"({limits.disk_factor:g}x the database size)", "free disk space first")
    return Check("disk", "ok", f"{free // 2**20} MiB free for a {size // 2**20} MiB database")


def _tools_check(major: int, bindir: str | None) -> Check:
    try:
        chosen = tools.for_server(major, bindir)
    except TViewError as exc:
        return Check("backup_tools", "fail", str(exc), exc.hint)
    return Check("backup_tools", "ok", f"pg_dump {chosen.version[0]}.{chosen.version[1]} in {chosen.bindir}")


def _resources_check(limits: Limits) -> Check:
    cpus = os.cpu_count() or 1
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is not None and available < limits.min_memory_bytes:
        return Check("resources", "fail", f"{available // 2**20} MiB memory available on this machine",
                     f"at least {limits.min_memory_bytes // 2**20} MiB are needed for backups and checks")
    memory = f"{available // 2**20} MiB available" if available is not None else "memory unknown"
    return Check("resources", "ok", f"{cpus} CPUs, {memory} on this machine")
