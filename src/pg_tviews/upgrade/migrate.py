"""Moving the catalog between versions: `pg-tviews upgrade run`, `upgrade rollback`, `upgrade history`.

A run: checks (refused on any failed check), a backup verified by restoring it (unless declined),
the migration steps in one transaction under the catalog's advisory lock (plain schema mode: the
chain's scripts; extension mode: ALTER EXTENSION ... UPDATE, which runs the same scripts), the
structural validation inside that transaction (a failure rolls everything back), then the data
validation; every run is journaled in tviews.upgrade_history whatever its outcome (the migration
transaction marks its entry succeeded as it commits; a run whose session died before is recorded as
interrupted by the next run or `upgrade history`, see journal.py). TVIEWs are never rebuilt: their
generated objects only call the runtime interface, which every version keeps.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import psycopg

from .. import catalog
from ..catalog import chain as chain_mod
from ..catalog.installer import CATALOG_LOCK_SQL, apply_scripts
from ..errors import CatalogError, UpgradeError
from . import journal
from .validate import Finding, structure, validate


@dataclass
class RunResult:
    from_version: str
    to_version: str
    mode: str
    method: str
    steps: list[str]
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    result: str = "running"
    error: str | None = None
    history_id: int | None = None
    backup_dir: str | None = None
    checks: list = field(default_factory=list)
    validation: list[Finding] = field(default_factory=list)

    @property
    def duration_ms(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds() * 1000

    def as_dict(self) -> dict:
        return asdict(self) | {"duration_ms": self.duration_ms}


def steps_between(found: catalog.InstalledCatalog, to_version: str) -> list[chain_mod.Script]:
    chain = chain_mod.load()
    chain.check_known(to_version)
    if found.version not in chain.versions:
        raise CatalogError(f"installed catalog version {found.version} is not known to this pg-tviews",
                           hint=f"this pg-tviews knows {', '.join(chain.versions)}; use a matching release")
    return chain.path(found.version, to_version)


def migrate(conn: psycopg.Connection, to_version: str, journal_entry: int | None = None) -> list[str]:
    """The migration itself, in one transaction (a savepoint inside the caller's): scripts applied,
    structure validated, the journal entry (if any) marked succeeded; on any error nothing changes.
    Returns the steps applied."""
    with conn.transaction():
        conn.execute(CATALOG_LOCK_SQL)
        found = catalog.require(conn)
        scripts = steps_between(found, to_version)
        if not scripts:
            return []
        if found.mode == "extension":
            conn.execute(psycopg.sql.SQL("ALTER EXTENSION pg_tviews UPDATE TO {}").format(psycopg.sql.Literal(to_version)))
        else:
            apply_scripts(conn, scripts)
        broken = [f for f in structure(conn, to_version) if f.status == "fail"]
        if broken:
            raise UpgradeError(f"after migrating to {to_version}: {broken[0].message}",
                               hint="nothing was changed; report this, with `pg-tviews upgrade check --json`")
        if journal_entry is not None:
            journal.mark_migrated(conn, journal_entry)
        return [s.name for s in scripts]


def run(
    conn: psycopg.Connection,
    to_version: str,
    *,
    method: str = "upgrade",
    checks: Callable[[], list] | None = None,
    backup: Callable[[], str] | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> RunResult:
    """A journaled run: checks, backup, migration, validation (see the module notes).

    `checks` returns check results (dicts with a status) and `backup` makes a verified backup and
    returns its directory; both are optional so that callers decide what to run.
    """
    found = catalog.require(conn)
    scripts = steps_between(found, to_version)
    result = RunResult(found.version, to_version, found.mode, method, [s.name for s in scripts],
                       dt.datetime.now(dt.timezone.utc))
    if checks is not None:
        progress("running pre-upgrade checks")
        result.checks = checks()
    journal.close_interrupted(conn)
    result.history_id = journal.start(conn, found.version, to_version, method, result.checks, None, hold=True)
    try:
        failed = [c for c in result.checks if c.get("status") == "fail"]
        if failed:
            raise UpgradeError(f"pre-upgrade check failed: {failed[0]['name']}: {failed[0]['message']}",
                               hint=failed[0].get("hint") or "fix it and run again; nothing was changed")
        if backup is not None:
            progress("backing up")
            result.backup_dir = backup()
        progress(f"migrating {found.version} -> {to_version}: {', '.join(result.steps) or 'nothing to do'}")
        migrate(conn, to_version, result.history_id)
    except (psycopg.Error, CatalogError, UpgradeError) as exc:
        result.result = "failed"
        result.error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _finish(conn, result)
        if isinstance(exc, psycopg.Error):
            raise UpgradeError(f"migration {found.version} -> {to_version} failed: {result.error}",
                               hint="nothing was changed; the journal (pg-tviews upgrade history) has the details") from exc
        raise
    # the migration is committed (and its entry says so): whatever happens now, it succeeded
    result.result = "succeeded"
    progress("validating")
    try:
        result.validation = validate(conn, to_version).findings
    except (psycopg.Error, CatalogError, UpgradeError) as exc:
        result.error = f"validation after the migration did not complete: {str(exc).strip().splitlines()[0]}"
    bad = [f for f in result.validation if f.status == "fail"]
    if bad:
        result.error = f"validation after the migration: {bad[0].message}"
    _finish(conn, result)
    return result


def _finish(conn: psycopg.Connection, result: RunResult) -> None:
    result.finished_at = dt.datetime.now(dt.timezone.utc)
    try:
        journal.finish(conn, result.history_id, result.result, result.error, result.backup_dir)
    except psycopg.Error as exc:  # the database may be gone (killed connection, server down)
        result.error = f"{result.error or ''} (journal not updated: {str(exc).strip().splitlines()[0]})"


def previous_version(conn: psycopg.Connection) -> str:
    """The version the catalog had before its last successful change (for `upgrade rollback`)."""
    current = catalog.require(conn).version
    for entry in reversed(journal.history(conn)):
        if entry.result == "succeeded" and entry.to_version == current:
            return entry.from_version
    raise UpgradeError(f"the journal records no successful change to {current}",
                       hint="downgrade explicitly with `pg-tviews upgrade run --to VERSION`")
