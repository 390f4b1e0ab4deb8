"""PostgreSQL upgrades with TVIEWs in place: `pg-tviews pg-upgrade minor | major | rollback`.

Minor (same major, new binaries): checks, a clean shutdown, a start on the new binaries on the
same port, validation. Major: pg_upgrade into a new data directory initialised here with the old
cluster's settings (encoding, locale, data checksums, WAL segment size, superuser, server
settings, access rules), `pg_upgrade --check` first, then the upgrade in link or copy mode, then
what pg_upgrade asks for (extension updates, statistics), then validation. Every TVIEW must come
through alive: equal to its definition and maintained by a write (see liveness). A copy-mode
upgrade can be rolled back: the old cluster is untouched and `rollback` starts it again.

Each run is journaled in tviews.upgrade_history of every database holding pg_tviews: the entry is
opened on the old server before it stops (pg_upgrade carries it) and closed on the new one.

Clusters are driven through `Cluster`: server commands run as the data directory's owner
(PostgreSQL refuses root), and servers are reached on 127.0.0.1 at their port as `user`; when a
server asks for a password, libpq finds it in PGPASSWORD or ~/.pgpass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from .. import catalog
from ..errors import ServerError, UpgradeError, UsageError
from ..server.cluster import Binaries, Cluster, datadir_owner, ensure_owned_dir, is_root, run_as
from . import journal, liveness
from .backup import Progress, _no_progress
from .checks import Check, Limits, run_checks
from .validate import Finding

METHODS = ("copy", "link")
#: written into the new data directory: what `rollback` needs to know about the upgrade
RECORD = "pg_tviews_upgrade.json"
#: where pg_upgrade (15 and later) writes its logs, inside the new data directory
LOGS = "pg_upgrade_output.d"
#: settings that locate files of one cluster: never carried to another (access rules are copied)
LOCAL_SETTINGS = ("data_directory", "config_file", "hba_file", "ident_file", "external_pid_file")
#: our own checks replace these for a PostgreSQL upgrade (pg_dump is not used; disk needs differ)
NOT_CHECKED = frozenset({"disk", "backup_tools", "prepared_transactions"})


@dataclass
class Step:
    name: str
    seconds: float


class Outcome:
    """What a run (PostgreSQL upgrade, logical migration) reports: ok, total duration, as JSON."""

    steps: list[Step]
    result: str  # running, refused, failed, succeeded
    error: str | None

    @property
    def ok(self) -> bool:
        return self.result == "succeeded" and self.error is None

    @property
    def duration_s(self) -> float:
        return round(sum(s.seconds for s in self.steps), 3)

    def as_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok, "duration_s": self.duration_s}


@dataclass
class DatabaseResult:
    database: str
    catalog_version: str | None
    catalog_mode: str | None
    journal_id: int | None = None
    findings: list[Finding] = field(default_factory=list)


@dataclass
class PgUpgradeResult(Outcome):
    kind: str  # minor, major, rollback
    method: str  # restart (minor), copy or link (major)
    from_version: str  # PostgreSQL versions, e.g. 15.17
    to_version: str
    old_datadir: str
    new_datadir: str
    old_bindir: str
    new_bindir: str
    port: int | None = None
    checks: list[Check] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    databases: list[DatabaseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rollback: str | None = None  # how to go back, or why one cannot
    result: str = "running"  # running, refused, failed, succeeded
    error: str | None = None


class UpgradeRefused(UpgradeError):
    """A precondition failed; nothing was changed. Carries the run's result, with every check."""

    def __init__(self, message: str, *, hint: str | None, result: object):
        super().__init__(message, hint=hint)
        self.result = result


class Steps:
    """Times each step into `done` and reports it as progress: (what, 0, 1), then (what, 1, 1)."""

    def __init__(self, done: list[Step], progress: Progress):
        self.done = done
        self.progress = progress

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.progress(name, 0, 1)
        started = time.monotonic()
        yield
        self.done.append(Step(name, round(time.monotonic() - started, 3)))
        self.progress(name, 1, 1)


# -- inputs -----------------------------------------------------------------------------------


def resolve_bindir(text: str | os.PathLike[str]) -> Binaries:
    """A PostgreSQL bin directory, or the word `embedded` for the PostgreSQL 18 shipped with pg-tviews."""
    if str(text) == "embedded":
        return Binaries.embedded()
    path = Path(text).expanduser().absolute()
    if not (path / "postgres").exists():
        raise UsageError(f"{path} holds no postgres executable",
                         hint="give the bin directory of a PostgreSQL installation (pg_config --bindir), or `embedded`")
    return Binaries(path)


def version_text(binaries: Binaries) -> str:
    major, minor = binaries.version
    return f"{major}.{minor}"


def _require_cluster(datadir: Path, what: str) -> None:
    if not (datadir / "PG_VERSION").exists():
        raise UsageError(f"{datadir} is not a PostgreSQL data directory (no PG_VERSION)",
                         hint=f"give the {what} data directory")
    if not (datadir / "postgresql.conf").exists():
        raise UsageError(f"{datadir} has no postgresql.conf: its configuration lives elsewhere (a Debian-style "
                         "cluster?), which these commands do not drive",
                         hint="upgrade such a cluster with its own tooling (pg_upgradecluster), then validate it "
                              "with `pg-tviews validate`")


def _owner(datadir: Path) -> str | None:
    """The OS user to run server commands as; refuses when we can act as neither it nor root."""
    if not is_root() and datadir.stat().st_uid != os.geteuid():
        raise UsageError(f"{datadir} belongs to another user",
                         hint="run as the data directory's owner, or as root (commands then run as the owner)")
    return datadir_owner(datadir)


def _require_binaries_of(cluster: Cluster, *, already: Binaries | None = None) -> None:
    """Refuse a running server that was started from other binaries than the ones given."""
    exe = cluster.executable()
    if exe is None:
        return
    expected = cluster.binaries.tool("postgres").resolve()
    if exe.resolve() == expected:
        return
    if already is not None and exe.resolve() == already.tool("postgres").resolve():
        raise UsageError(f"the server of {cluster.datadir} already runs on {already.bindir}",
                         hint="nothing to upgrade; `pg-tviews validate` checks it")
    raise UsageError(f"the server of {cluster.datadir} runs {exe}, not the binaries in {cluster.binaries.bindir}",
                     hint="give the bin directory of the running server as --old-bindir")


def _require_empty(datadir: Path) -> None:
    if datadir.exists() and (not datadir.is_dir() or any(datadir.iterdir())):
        held = "a PostgreSQL cluster" if (datadir / "PG_VERSION").exists() else "files"
        raise UsageError(f"the new data directory {datadir} is not empty: it holds {held}",
                         hint="give an absent or empty directory: pg-tviews initialises it itself, with the old "
                              "cluster's encoding, locale and checksum settings")


# -- the old server ---------------------------------------------------------------------------


@dataclass
class ServerFacts:
    """What the new cluster must match, read from the running old server."""

    version: str
    superuser: str  # the bootstrap superuser: pg_upgrade's and initdb's -U
    port: int
    encoding: str
    provider: str  # libc, icu or builtin (template0's)
    collate: str
    ctype: str
    locale: str | None  # the ICU or builtin locale
    data_checksums: bool
    wal_segment_mb: int
    settings: dict[str, str]  # from configuration files
    hba_file: str
    ident_file: str
    databases: list[str]  # those that accept connections


PROVIDERS = {"c": "libc", "i": "icu", "b": "builtin"}


def server_facts(cluster: Cluster, user: str) -> ServerFacts:
    with psycopg.connect(cluster.dsn("postgres", user), autocommit=True, connect_timeout=10) as conn:
        locale_column = "datlocale" if conn.info.server_version >= 170000 else "daticulocale"
        encoding, provider, collate, ctype, locale = conn.execute(sql.SQL(
            "SELECT pg_catalog.pg_encoding_to_char(encoding), datlocprovider, datcollate, datctype, {}"
            "  FROM pg_catalog.pg_database WHERE datname = 'template0'").format(sql.Identifier(locale_column))
        ).fetchone()
        settings = dict(conn.execute(
            "SELECT name, current_setting(name) FROM pg_catalog.pg_settings"
            " WHERE source = 'configuration file' AND name <> ALL (%s) ORDER BY name", (list(LOCAL_SETTINGS),)))

        def show(name: str) -> str:
            return conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]

        return ServerFacts(
            version=show("server_version").split()[0],
            superuser=conn.execute("SELECT rolname FROM pg_catalog.pg_roles WHERE oid = 10").fetchone()[0],
            port=int(show("port")),
            encoding=encoding,
            provider=PROVIDERS.get(provider, provider),
            collate=collate,
            ctype=ctype,
            locale=locale,
            data_checksums=show("data_checksums") == "on",
            wal_segment_mb=int(conn.execute("SELECT setting::bigint FROM pg_catalog.pg_settings"
                                            " WHERE name = 'wal_segment_size'").fetchone()[0]) // 2**20,
            settings=settings,
            hba_file=show("hba_file"),
            ident_file=show("ident_file"),
            databases=[r[0] for r in conn.execute(
                "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")],
        )


def initdb_args(facts: ServerFacts, new_major: int) -> list[str]:
    """initdb options that make the new cluster acceptable to pg_upgrade: what it compares."""
    args = [f"--username={facts.superuser}", f"--encoding={facts.encoding}", f"--wal-segsize={facts.wal_segment_mb}",
            f"--locale-provider={facts.provider}", f"--lc-collate={facts.collate}", f"--lc-ctype={facts.ctype}"]
    if facts.provider == "icu":
        args.append(f"--icu-locale={facts.locale}")
    elif facts.provider == "builtin":
        args.append(f"--builtin-locale={facts.locale}")
    if facts.data_checksums:
        args.append("--data-checksums")
    elif new_major >= 18:  # initdb enables them by default from 18 on; pg_upgrade refuses a mismatch
        args.append("--no-data-checksums")
    return args


def carried_settings(facts: ServerFacts, new: Binaries, user: str | None, workdir: Path) -> dict[str, str]:
    """The old server's configured settings that the new major knows, as postgresql.conf values.

    Parameters removed in the new major are left behind (pg_upgrade would refuse to start the
    server with them); extension parameters (with a dot) are kept."""
    described = run_as([str(new.tool("postgres")), "--describe-config"], user=user, cwd=workdir).stdout
    known = {line.split("\t", 1)[0] for line in described.splitlines()}
    carried = {name: "'" + value.replace("'", "''") + "'" for name, value in facts.settings.items()
               if name in known or "." in name}
    return carried | {"port": str(facts.port)}


# -- checks -----------------------------------------------------------------------------------


def _database_checks(cluster: Cluster, user: str, facts: ServerFacts, *, target_bindir: str | None,
                     limits: Limits) -> tuple[list[Check], list[DatabaseResult]]:
    """pg-tviews' pre-upgrade checks in every database holding pg_tviews (names prefixed with it)."""
    found, databases = [], []
    for name in facts.databases:
        with psycopg.connect(cluster.dsn(name, user), autocommit=True, connect_timeout=10) as conn:
            installed = catalog.installed(conn)
        if not installed.installed:
            continue
        databases.append(DatabaseResult(name, installed.version, installed.mode))
        report = run_checks(cluster.dsn(name, user), target_bindir=target_bindir, limits=limits, skip=NOT_CHECKED)
        found += [Check(f"{name}: {c.name}", c.status, c.message, c.hint) for c in report.checks]
    return found, databases


def _prepared_check(cluster: Cluster, user: str) -> Check:
    with psycopg.connect(cluster.dsn("postgres", user), autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute("SELECT database, count(*) FROM pg_catalog.pg_prepared_xacts GROUP BY 1 ORDER BY 1").fetchall()
    if rows:
        where = ", ".join(f"{n} in {db}" for db, n in rows)
        return Check("prepared_transactions", "fail", f"prepared transactions are open: {where}",
                     "COMMIT PREPARED or ROLLBACK PREPARED them (see pg_prepared_xacts); pg_upgrade refuses them")
    return Check("prepared_transactions", "ok", "no prepared transactions in any database")


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _disk_check(old_dir: Path, new_dir: Path, method: str, limits: Limits) -> Check:
    size = _tree_size(old_dir)
    factor = limits.link_disk_factor if method == "link" else limits.disk_factor
    where = _existing_ancestor(new_dir)
    free = shutil.disk_usage(where).free
    needed = int(size * factor)
    mib = 2**20
    if free < needed:
        return Check("disk", "fail", f"{free // mib} MiB free in {where}, {needed // mib} MiB needed for a {method}-mode "
                     f"upgrade ({factor:g}x the old data directory's {size // mib} MiB)",
                     "free disk space, put the new data directory on a larger file system"
                     + (", or use --link" if method == "copy" else ""))
    return Check("disk", "ok", f"{free // mib} MiB free in {where} for a {method}-mode upgrade of {size // mib} MiB")


def _link_check(old_dir: Path, new_dir: Path) -> Check:
    if old_dir.stat().st_dev != _existing_ancestor(new_dir).stat().st_dev:
        return Check("link", "fail", f"{old_dir} and {new_dir} are on different file systems: files cannot be hard-linked",
                     "put the new data directory on the old one's file system, or use --copy")
    return Check("link", "ok", "both data directories are on one file system")


def _target_check(new: Binaries, limits: Limits) -> Check:
    if new.major not in limits.supported_majors:
        return Check("target", "fail", f"pg_tviews does not support PostgreSQL {new.major}",
                     f"supported majors: {', '.join(map(str, limits.supported_majors))}")
    return Check("target", "ok", f"PostgreSQL {version_text(new)} in {new.bindir}")


def refuse_if_failed(result) -> None:
    """Raise UpgradeRefused on the first failed check of `result.checks`, naming it."""
    failed = [c for c in result.checks if c.status == "fail"]
    if failed:
        result.result = "refused"
        first = failed[0]
        more = f" (and {len(failed) - 1} more failed checks)" if len(failed) > 1 else ""
        raise UpgradeRefused(f"refused: {first.name}: {first.message}{more}",
                             hint=(first.hint or "fix it and run again") + "; nothing was changed",
                             result=result)


# -- journal ----------------------------------------------------------------------------------


def _journal_start(cluster: Cluster, user: str, result: PgUpgradeResult, method: str) -> None:
    checks = [asdict(c) for c in result.checks]
    for db in result.databases:
        with psycopg.connect(cluster.dsn(db.database, user), autocommit=True) as conn:
            db.journal_id = journal.start(conn, f"PostgreSQL {result.from_version}",
                                          f"PostgreSQL {result.to_version}", method, checks, None)


def _journal_finish(cluster: Cluster, user: str, result: PgUpgradeResult, outcome: str, error: str | None) -> None:
    """Close every entry; a database that cannot be reached is noted, not fatal (the run is over)."""
    for db in result.databases:
        if db.journal_id is None:
            continue
        try:
            with psycopg.connect(cluster.dsn(db.database, user), autocommit=True, connect_timeout=10) as conn:
                journal.finish(conn, db.journal_id, outcome, error)
        except (psycopg.Error, ServerError) as exc:
            result.notes.append(f"{db.database}: journal entry {db.journal_id} not closed: {str(exc).strip()}")


# -- after the upgrade ------------------------------------------------------------------------


def _update_extensions(cluster: Cluster, user: str, databases: list[str]) -> list[str]:
    """ALTER EXTENSION ... UPDATE where the new installation has a newer default (what pg_upgrade's
    update_extensions.sql does), except pg_tviews: its catalog moves with `pg-tviews upgrade run`."""
    notes = []
    for name in databases:
        with psycopg.connect(cluster.dsn(name, user), autocommit=True) as conn:
            for ext, installed, default in conn.execute(
                "SELECT name, installed_version, default_version FROM pg_catalog.pg_available_extensions"
                " WHERE installed_version IS NOT NULL AND installed_version <> default_version ORDER BY 1"
            ).fetchall():
                if ext == "pg_tviews":
                    notes.append(f"{name}: pg_tviews stays at {installed} (the new installation's default is "
                                 f"{default}); move it with `pg-tviews upgrade run --to {default}`")
                    continue
                conn.execute(sql.SQL("ALTER EXTENSION {} UPDATE").format(sql.Identifier(ext)))
                notes.append(f"{name}: extension {ext} updated from {installed} to {default}")
    return notes


def _statistics(cluster: Cluster, user: str, jobs: int) -> str:
    """Optimizer statistics: pg_upgrade carries them from PostgreSQL 18 on, except some; earlier
    versions carry none. Either way vacuumdb --analyze-in-stages is what pg_upgrade recommends."""
    command = [str(cluster.binaries.tool("vacuumdb")), "--all", "--analyze-in-stages", f"--jobs={jobs}",
               "--host=127.0.0.1", f"--port={cluster.port()}", f"--username={user}"]
    if cluster.binaries.major >= 18:
        command.append("--missing-stats-only")
    run_as(command, user=None, timeout=None)
    return " ".join(["vacuumdb", *command[1:]])


def _validate(cluster: Cluster, user: str, result: PgUpgradeResult) -> None:
    for db in result.databases:
        with psycopg.connect(cluster.dsn(db.database, user), autocommit=True) as conn:
            db.findings = liveness.check_database(conn)
    bad = [(db.database, f) for db in result.databases for f in db.findings if f.status == "fail"]
    if bad:
        result.error = f"validation: {bad[0][0]}: {bad[0][1].message}" + (
            f" (and {len(bad) - 1} more failures)" if len(bad) > 1 else "")


def _checked(old: Cluster, new_bins: Binaries, user: str, result: PgUpgradeResult, steps: Steps, limits: Limits,
             method: str, cluster_checks: Callable[[], list[Check]] = list) -> tuple[ServerFacts, bool]:
    """The phase before anything changes: the old server started if it was stopped, read, checked
    (pg-tviews' checks in every database holding pg_tviews, then `cluster_checks`), the journal
    opened. A failed check refuses, journaled, with the server left as it was found. Returns the
    server's facts and whether it was running."""
    was_running = old.is_running()
    if not was_running:
        with steps("start the old server for the checks"):
            old.start()
    try:
        facts = server_facts(old, user)
        result.port = facts.port
        with steps("pre-upgrade checks"):
            checks, result.databases = _database_checks(old, user, facts, target_bindir=str(new_bins.bindir),
                                                        limits=limits)
            result.checks = [_target_check(new_bins, limits), *cluster_checks(), *checks]
        _journal_start(old, user, result, method)
        if any(c.status == "fail" for c in result.checks):
            _journal_finish(old, user, result, "failed", "refused by the pre-upgrade checks")
            refuse_if_failed(result)
    except BaseException:
        if not was_running:
            old.stop()
        raise
    return facts, was_running


# -- minor --------------------------------------------------------------------------------------


def minor(datadir: str | os.PathLike[str], old_bindir: str, new_bindir: str, *, user: str = "postgres",
          limits: Limits = Limits(), progress: Progress = _no_progress) -> PgUpgradeResult:
    """Restart a cluster on the binaries of another minor version of its major, with checks,
    validation and a journal entry; the server is left running or stopped, as it was found."""
    data = Path(datadir).expanduser().absolute()
    _require_cluster(data, "cluster's")
    old_bins, new_bins = resolve_bindir(old_bindir), resolve_bindir(new_bindir)
    data_major = int((data / "PG_VERSION").read_text().strip())
    if not old_bins.major == new_bins.major == data_major:
        raise UsageError(f"a minor upgrade stays within one major: {data} is PostgreSQL {data_major}, --old-bindir "
                         f"holds {version_text(old_bins)}, --new-bindir holds {version_text(new_bins)}",
                         hint="give bin directories of the data directory's major; across majors use "
                              "`pg-tviews pg-upgrade major` or `pg-tviews migrate`")
    if old_bins.version == new_bins.version:
        raise UsageError(f"--old-bindir and --new-bindir both hold PostgreSQL {version_text(old_bins)}",
                         hint="give the new minor version's bin directory as --new-bindir")
    owner = _owner(data)
    old = Cluster(data, old_bins, os_user=owner)
    new = Cluster(data, new_bins, os_user=owner)
    _require_binaries_of(old, already=new_bins)
    result = PgUpgradeResult("minor", "restart", version_text(old_bins), version_text(new_bins), str(data), str(data),
                             str(old_bins.bindir), str(new_bins.bindir))
    result.rollback = (f"restart on the previous binaries: pg-tviews pg-upgrade minor --data-dir {data} "
                       f"--old-bindir {new_bins.bindir} --new-bindir {old_bins.bindir}")
    steps = Steps(result.steps, progress)
    facts, was_running = _checked(old, new_bins, user, result, steps, limits, "minor: restart on new binaries")
    with steps("clean shutdown"):
        old.stop("fast")
    try:
        with steps("start on the new binaries"):
            new.start(port=facts.port)
    except ServerError as exc:
        old.start(port=facts.port)
        result.result, result.error = "failed", f"the server did not start on {new_bins.bindir}: {exc.message}"
        _journal_finish(old, user, result, "failed", result.error)
        if not was_running:
            old.stop()
        raise UpgradeError(result.error, hint=f"the server runs on {old_bins.bindir} again; see {new.log_path} "
                           "or the server's own log") from exc
    _finish(new, user, result, was_running, steps)
    return result


def _finish(new: Cluster, user: str, result: PgUpgradeResult, keep_running: bool, steps: Steps) -> None:
    """Validate, close the journal, leave the new server running or stopped."""
    with steps("validate"):
        _validate(new, user, result)
    result.result = "succeeded"
    _journal_finish(new, user, result, "succeeded", result.error)
    if not keep_running:
        with steps("stop the server (it was stopped before the upgrade)"):
            new.stop()


# -- major --------------------------------------------------------------------------------------


def major(old_bindir: str, old_datadir: str | os.PathLike[str], new_bindir: str, new_datadir: str | os.PathLike[str],
          *, method: str = "copy", jobs: int = 1, user: str = "postgres", limits: Limits = Limits(),
          progress: Progress = _no_progress) -> PgUpgradeResult:
    """pg_upgrade to a newer major with pg-tviews' checks around it (see the module notes)."""
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}", hint="use copy or link")
    if limits.max_pending_queue is None:
        # async TVIEWs are exact only once their queue is applied, and no worker runs meanwhile
        limits = dataclasses.replace(limits, max_pending_queue=0)
    old_dir, new_dir = Path(old_datadir).expanduser().absolute(), Path(new_datadir).expanduser().absolute()
    _require_cluster(old_dir, "old cluster's")
    old_bins, new_bins = resolve_bindir(old_bindir), resolve_bindir(new_bindir)
    data_major = int((old_dir / "PG_VERSION").read_text().strip())
    if old_bins.major != data_major:
        raise UsageError(f"{old_dir} is a PostgreSQL {data_major} cluster but --old-bindir holds "
                         f"PostgreSQL {version_text(old_bins)}",
                         hint=f"give the bin directory of PostgreSQL {data_major} as --old-bindir")
    if new_bins.major <= old_bins.major:
        raise UsageError(f"--new-bindir holds PostgreSQL {version_text(new_bins)}, not a newer major than the old "
                         f"cluster's {version_text(old_bins)}",
                         hint="within one major use `pg-tviews pg-upgrade minor`; give the new major's bin directory")
    _require_empty(new_dir)
    owner = _owner(old_dir)
    old = Cluster(old_dir, old_bins, os_user=owner)
    new = Cluster(new_dir, new_bins, os_user=owner)
    _require_binaries_of(old)
    result = PgUpgradeResult("major", method, version_text(old_bins), version_text(new_bins), str(old_dir),
                             str(new_dir), str(old_bins.bindir), str(new_bins.bindir))
    steps = Steps(result.steps, progress)
    facts, was_running = _checked(
        old, new_bins, user, result, steps, limits, f"pg_upgrade --{method}",
        lambda: [_prepared_check(old, user), _disk_check(old_dir, new_dir, method, limits),
                 *([_link_check(old_dir, new_dir)] if method == "link" else [])])
    workdir = Path(tempfile.mkdtemp(prefix="pg_tviews-pg_upgrade-", dir="/tmp"))
    ensure_owned_dir(workdir, owner)
    new_existed = new_dir.exists()
    try:
        with steps("clean shutdown of the old server"):
            old.stop("fast")
        with steps("initdb the new cluster with the old one's settings"):
            carried = carried_settings(facts, new_bins, owner, workdir)
            new.init(initdb_args=initdb_args(facts, new_bins.major), settings=carried)
        result.notes.append(f"carried {len(carried)} settings of the old server into {new_dir / Cluster.CONF_NAME}")
        with steps("pg_upgrade --check"):
            _pg_upgrade(old, new, facts.superuser, method, jobs, workdir, check=True)
        with steps(f"pg_upgrade --{method}"):
            _pg_upgrade(old, new, facts.superuser, method, jobs, workdir, check=False)
    except BaseException as exc:
        _recover(old, new, user, result, workdir, was_running, new_existed, exc)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    for source, name in ((facts.hba_file, "pg_hba.conf"), (facts.ident_file, "pg_ident.conf")):
        shutil.copyfile(source, new_dir / name)
        shutil.copystat(source, new_dir / name)
        if owner is not None:
            shutil.chown(new_dir / name, owner)
    result.notes.append("access rules (pg_hba.conf, pg_ident.conf) copied from the old cluster")
    _write_record(new_dir, result, user, owner)
    result.rollback = _rollback_text(result)
    try:
        with steps("start the new server"):
            new.start(port=facts.port)
    except ServerError as exc:
        result.result, result.error = "failed", f"the upgraded cluster did not start: {exc.message}"
        raise UpgradeError(result.error, hint=f"see {new.log_path}; fix its configuration in {new_dir} and start "
                           f"it with pg_ctl, then run `pg-tviews validate`; or roll back: {result.rollback}") from exc
    with steps("update extensions"):
        result.notes += _update_extensions(new, user, facts.databases)
    with steps("optimizer statistics"):
        result.notes.append(f"ran {_statistics(new, user, jobs)}")
    _finish(new, user, result, was_running, steps)
    return result


def _pg_upgrade(old: Cluster, new: Cluster, superuser: str, method: str, jobs: int, workdir: Path, *,
                check: bool) -> None:
    command = [str(new.binaries.tool("pg_upgrade")), f"--old-bindir={old.binaries.bindir}",
               f"--new-bindir={new.binaries.bindir}", f"--old-datadir={old.datadir}", f"--new-datadir={new.datadir}",
               f"--username={superuser}", f"--socketdir={workdir}", f"--jobs={jobs}"]
    if method == "link":
        command.append("--link")
    elif new.binaries.major >= 16:  # copy is the default; PostgreSQL 15's pg_upgrade has no --copy
        command.append("--copy")
    if check:
        command.append("--check")
    proc = run_as(command, user=new.os_user, cwd=workdir, timeout=None, check=False)
    if proc.returncode != 0:
        # the logs are in the new data directory, which _recover removes after copying them here
        output = (proc.stdout + proc.stderr).replace(str(new.datadir / LOGS), str(workdir / LOGS))
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        # from the step that failed: step lines pad their name with spaces before ok/fatal/failed
        steps = [i for i, line in enumerate(lines) if "   " in line and not line.endswith(" ok")]
        excerpt = lines[steps[-1]:] if steps else lines[-6:]
        raise UpgradeError(f"pg_upgrade{' --check' if check else ''} failed: "
                           + " ".join(" ".join(line.split()) for line in excerpt),
                           hint=f"its logs are kept in {workdir}; fix the cause and run again")


def _recover(old: Cluster, new: Cluster, user: str, result: PgUpgradeResult, workdir: Path, was_running: bool,
             new_existed: bool, exc: BaseException) -> None:
    """After a failed pg_upgrade: keep its logs, remove the new cluster, bring the old one back.

    A link-mode run that got as far as linking renamed the old global/pg_control to
    pg_control.old so that the old cluster cannot start; as the new cluster never ran, renaming it
    back is safe (pg_upgrade's documentation says so)."""
    result.result = "failed"
    result.error = str(exc) if isinstance(exc, Exception) else type(exc).__name__
    if (new.datadir / LOGS).is_dir():
        shutil.copytree(new.datadir / LOGS, workdir / LOGS, dirs_exist_ok=True)
    if new.datadir.exists():  # back to absent or empty, as it was given
        shutil.rmtree(new.datadir, ignore_errors=True)
        if new_existed:
            ensure_owned_dir(new.datadir, new.os_user)
    disabled = old.datadir / "global" / "pg_control.old"
    if disabled.exists() and not (old.datadir / "global" / "pg_control").exists():
        disabled.rename(old.datadir / "global" / "pg_control")
        result.notes.append(f"renamed {disabled.name} back: the new cluster never ran")
    with contextlib.suppress(ServerError):
        old.start(port=result.port)
        _journal_finish(old, user, result, "failed", result.error)
        if not was_running:
            old.stop()


def _write_record(new_dir: Path, result: PgUpgradeResult, user: str, owner: str | None) -> None:
    record = {"old_bindir": result.old_bindir, "old_datadir": result.old_datadir, "new_bindir": result.new_bindir,
              "new_datadir": result.new_datadir, "method": result.method, "from_version": result.from_version,
              "to_version": result.to_version, "user": user, "port": result.port,
              "journal": {db.database: db.journal_id for db in result.databases},
              "upgraded_at": dt.datetime.now(dt.timezone.utc).isoformat(), "rolled_back_at": None}
    path = new_dir / RECORD
    path.write_text(json.dumps(record, indent=2))
    if owner is not None:
        shutil.chown(path, owner)


def _rollback_text(result: PgUpgradeResult) -> str:
    if result.method == "link":
        return (f"none: the old data directory {result.old_datadir} shares its files with the new cluster, which has "
                "run; never start it again. Going back means restoring a backup taken before the upgrade. Delete the "
                "old data directory once satisfied.")
    return (f"the old cluster in {result.old_datadir} is untouched: stop the new server, then "
            f"`pg-tviews pg-upgrade rollback --new-datadir {result.new_datadir}` starts the old one again (writes made "
            "on the new cluster are lost). Delete the old data directory once satisfied.")


# -- rollback -----------------------------------------------------------------------------------


def read_record(new_datadir: str | os.PathLike[str]) -> dict:
    path = Path(new_datadir).expanduser().absolute() / RECORD
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path} is missing: {path.parent} is not a cluster made by `pg-tviews pg-upgrade major`",
                         hint="give the new data directory of the upgrade to roll back") from None


def rollback(new_datadir: str | os.PathLike[str], *, user: str | None = None,
             progress: Progress = _no_progress) -> PgUpgradeResult:
    """Start the old cluster of a copy-mode upgrade again (the new one must be stopped)."""
    record = read_record(new_datadir)
    user = user or record["user"]
    result = PgUpgradeResult("rollback", record["method"], record["to_version"], record["from_version"],
                             record["old_datadir"], record["new_datadir"], record["old_bindir"], record["new_bindir"],
                             port=record.get("port"))
    if record["method"] == "link":
        raise UpgradeError(
            f"the upgrade to PostgreSQL {record['to_version']} ran in link mode: the old data directory "
            f"{record['old_datadir']} shares its data files with the new cluster, which has run since; starting "
            "the old cluster now would corrupt both",
            hint="there is no rollback from a link-mode upgrade: keep the new cluster, or restore a backup taken "
                 "before the upgrade (pg-tviews backup) into a fresh cluster")
    if record.get("rolled_back_at"):
        raise UsageError(f"this upgrade was already rolled back at {record['rolled_back_at']}",
                         hint=f"the old cluster lives in {record['old_datadir']}")
    old_dir, new_dir = Path(record["old_datadir"]), Path(record["new_datadir"])
    owner = _owner(old_dir)
    new = Cluster(new_dir, resolve_bindir(record["new_bindir"]), os_user=owner)
    old = Cluster(old_dir, resolve_bindir(record["old_bindir"]), os_user=owner)
    if new.is_running():
        raise UpgradeError(
            f"the new cluster in {new_dir} is running (pid {new.pid()}): it must be stopped before the old one "
            "starts (they serve the same port), and writes made on it since the upgrade will not be in the old one",
            hint=f"move what must be kept, stop it ({new.binaries.bindir}/pg_ctl -D {new_dir} stop -m fast), "
                 "then run the rollback again")
    steps = Steps(result.steps, progress)
    with steps("start the old cluster"):
        old.start(port=record.get("port"))
    result.databases = [DatabaseResult(name, None, None, journal_id) for name, journal_id in record["journal"].items()]
    for db in result.databases:
        with psycopg.connect(old.dsn(db.database, user), autocommit=True) as conn:
            found = catalog.installed(conn)
        db.catalog_version, db.catalog_mode = found.version, found.mode
    _journal_finish(old, user, result, "rolled back",
                    f"rolled back to PostgreSQL {record['from_version']} with `pg-tviews pg-upgrade rollback`")
    with steps("validate"):
        _validate(old, user, result)
    result.result = "succeeded"
    record["rolled_back_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    (new_dir / RECORD).write_text(json.dumps(record, indent=2))
    result.rollback = None
    result.notes.append(f"the new data directory {new_dir} is left as it is; delete it when you no longer need it")
    return result
