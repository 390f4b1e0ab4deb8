"""`pg-tviews doctor [--repair]`: drift between the catalog and the objects installed for it.

The catalog records every TVIEW by names and SQL text; what maintains it are objects generated
from that record: the definition view tviews.tv<id>_def, the TVIEW's table, functions
tviews.tv<id>_* and triggers pg_tviews_<id>_* on every source, plus the DDL guard's event
triggers. Manual DDL (a dropped or disabled trigger, a rename with the guard turned off) or a
restore that skipped triggers leaves them out of line with the catalog, and the TVIEW silently
stops following its sources. The doctor lists each such finding (what is wrong, for which TVIEW,
and the fix); the repair rebuilds the maintenance of the TVIEWs concerned from the catalog (from
the definition view's current text when sources were renamed: PostgreSQL keeps a view bound to
objects, not names), reinstalls the guard when the connected role may, and then recomputes every
row that differs from its definition, all in one transaction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import psycopg
from psycopg import sql

from .. import catalog, engine
from ..compiler.names import EVENTS, Names
from ..errors import CheckFailed, TViewError
from . import verify as verify_mod

GUARD_TRIGGERS = ("pg_tviews_ddl_guard", "pg_tviews_drop_guard")
REPAIR = "run `pg-tviews doctor --repair`"


@dataclass
class Finding:
    check: str  # guard, view, table, definition, functions, triggers
    problem: str
    fix: str
    tview: str | None = None  # None: about the database (the guard)
    repairable: bool = True  # by `--repair` (given the rights it needs)


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)  # before any repair
    actions: list[str] = field(default_factory=list)  # what the repair did
    remaining: list[Finding] = field(default_factory=list)  # found again after the repair
    repaired: bool = False

    @property
    def problems(self) -> list[Finding]:
        return self.remaining if self.repaired else self.findings

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}


# -- diagnosis ------------------------------------------------------------------------------------------------


def guard_findings(conn: psycopg.Connection) -> list[Finding]:
    """The DDL guard's event triggers, present and enabled."""
    found = dict(conn.execute(
        "SELECT evtname, evtenabled FROM pg_catalog.pg_event_trigger WHERE evtname = ANY (%s)", (list(GUARD_TRIGGERS),)
    ).fetchall())
    missing = [name for name in GUARD_TRIGGERS if name not in found]
    disabled = [name for name, enabled in found.items() if enabled == "D"]
    if not (missing or disabled):
        return []
    what = "; ".join(part for part in (
        f"event triggers missing: {', '.join(missing)}" if missing else "",
        f"event triggers disabled: {', '.join(disabled)}" if disabled else "") if part)
    if not catalog_owned_by_superuser(conn):
        fix = ("install the catalog as a superuser to have the guard: its event triggers run the catalog's "
               "functions for the DDL of every role, so their owner must be a superuser")
    elif not is_superuser(conn):
        fix = f"{REPAIR} as a superuser (only a superuser can create event triggers)"
    else:
        fix = REPAIR
    return [Finding(
        "guard", f"the DDL guard is not active ({what}): renaming or dropping what TVIEWs read is not refused", fix)]


def is_superuser(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user").fetchone()[0]


def catalog_owned_by_superuser(conn: psycopg.Connection) -> bool:
    """Whether the guard's functions belong to a superuser (tviews.install_ddl_guard refuses otherwise)."""
    return conn.execute(
        "SELECT r.rolsuper FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles r ON r.oid = p.proowner"
        " WHERE p.oid = 'tviews.guard_ddl()'::regprocedure"
    ).fetchone()[0]


def _definition_finding(conn: psycopg.Connection, tview: engine.TView) -> Finding | None:
    """Whether the recorded definition still names what it reads (sources renamed with the guard off)."""
    try:
        with conn.transaction():
            engine.analyze_recorded(conn, tview)
            return None
    except (TViewError, psycopg.Error) as exc:
        reason = exc.message if isinstance(exc, TViewError) else (exc.diag.message_primary or str(exc))
    has_view = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                            (Names(tview.id, tview.schema, tview.table).view,)).fetchone()[0]
    return Finding(
        "definition", f"the recorded definition no longer resolves ({reason}): a source or column it reads was "
        "renamed or dropped, and the generated triggers use the old names",
        f"{REPAIR}: it records the definition under the current names" if has_view
        else "drop the TVIEW (`pg-tviews drop`) and create it again: its definition view is gone too",
        tview.name, repairable=has_view,
    )


def tview_findings(conn: psycopg.Connection, tview: engine.TView) -> list[Finding]:
    """Drift of one TVIEW's generated objects from its catalog entry."""
    names = Names(tview.id, tview.schema, tview.table)
    findings = []
    view, table = conn.execute("SELECT to_regclass(%s), to_regclass(%s)", (names.view, names.target)).fetchone()
    if view is None:
        findings.append(Finding("view", f"the definition view {names.view} is missing",
                                f"{REPAIR}: it creates the view again from the recorded definition", tview.name))
    if table is None:
        findings.append(Finding("table", f"the TVIEW table {tview.name} is missing",
                                f"{REPAIR}: it creates and fills the table again", tview.name))
    elif view is not None and conn.execute(
        "SELECT tviews.column_signature(%s::regclass) IS DISTINCT FROM tviews.column_signature(%s::regclass)",
        (names.target, names.view),
    ).fetchone()[0]:
        findings.append(Finding(
            "table", f"the columns of {tview.name} differ from those of its definition",
            f"drop the TVIEW (`pg-tviews drop {tview.name}`) and create it again: its columns are its definition's",
            tview.name, repairable=False))
    definition = _definition_finding(conn, tview)
    if definition:
        findings.append(definition)
    expected = ["apply", "full", "lineage", "crossing",
                *(f"s{position}_{event}" for position in range(1, len(tview.sources) + 1) for event in EVENTS)]
    present = {r[0] for r in conn.execute(
        "SELECT proname FROM pg_catalog.pg_proc WHERE pronamespace = 'tviews'::regnamespace AND proname LIKE %s",
        (f"tv{tview.id}\\_%",))}
    missing = [f"tviews.{names.prefix}{suffix}" for suffix in expected if f"{names.prefix}{suffix}" not in present]
    if missing:
        findings.append(Finding("functions", f"generated functions missing: {', '.join(missing)}",
                                f"{REPAIR}: it generates them again", tview.name))
    for source in tview.sources:
        relation = sql.Identifier(source.schema, source.table).as_string(conn)
        triggers = dict(conn.execute(
            "SELECT tgname, tgenabled FROM pg_catalog.pg_trigger WHERE tgrelid = to_regclass(%s)", (relation,)
        ).fetchall())
        if not triggers and conn.execute("SELECT to_regclass(%s) IS NULL", (relation,)).fetchone()[0]:
            continue  # a source that is gone: the definition finding says so
        wanted = [f"pg_tviews_{tview.id}_{event}" for event in EVENTS] + [f"~pg_tviews_{tview.id}_gate"]
        missing = [t for t in wanted if t not in triggers]
        disabled = [t for t in wanted if triggers.get(t) == "D"]
        if missing:
            findings.append(Finding("triggers", f"triggers missing on {source.name}: {', '.join(missing)}: its "
                                    "writes no longer reach the TVIEW", f"{REPAIR}: it creates them again", tview.name))
        if disabled:
            findings.append(Finding("triggers", f"triggers disabled on {source.name}: {', '.join(disabled)}: its "
                                    "writes no longer reach the TVIEW", f"{REPAIR}: it enables maintenance again "
                                    "and recomputes the rows that missed writes", tview.name))
    return findings


def diagnose(conn: psycopg.Connection) -> list[Finding]:
    """Every drift between the catalog and the installed objects: the guard, then TVIEW by TVIEW."""
    catalog.require(conn)
    findings = guard_findings(conn)
    for tview in engine.list_tviews(conn):
        findings += tview_findings(conn, tview)
    return findings


# -- repair --------------------------------------------------------------------------------------------------


def _repair_tview(conn: psycopg.Connection, tview: engine.TView, findings: list[Finding]) -> str | None:
    """Rebuild the maintenance of one TVIEW; returns what was done (None: nothing could be done)."""
    if not all(f.repairable for f in findings):
        return None
    if any(f.check == "definition" for f in findings):
        engine.rebuild(conn, tview, engine.current_definition(conn, tview))
        return f"{tview.name}: definition recorded under the current names of its sources, maintenance rebuilt"
    engine.rebuild(conn, tview)
    return f"{tview.name}: maintenance rebuilt ({', '.join(sorted({f.check for f in findings}))})"


def repair_findings(conn: psycopg.Connection, findings: list[Finding]) -> list[str]:
    """Fix what can be fixed, in one transaction: the TVIEWs' maintenance in dependency order, the
    guard, then every row that differs from its definition. Returns what was done."""
    actions, broken = [], set()
    with conn.transaction():
        conn.execute(catalog.installer.CATALOG_LOCK_SQL)
        tviews = engine.list_tviews(conn)
        for tview in tviews:
            concerned = [f for f in findings if f.tview == tview.name]
            if not concerned:
                continue
            try:
                with conn.transaction():
                    done = _repair_tview(conn, tview, concerned)
            except (TViewError, psycopg.Error) as exc:
                reason = exc.message if isinstance(exc, TViewError) else exc.diag.message_primary
                actions.append(f"{tview.name}: not repaired: {reason}")
                done = None
            if done:
                actions.append(done)
            else:
                broken.add(tview.name)
        if any(f.check == "guard" for f in findings) and is_superuser(conn) and catalog_owned_by_superuser(conn):
            conn.execute("SELECT tviews.install_ddl_guard()")
            actions.append("DDL guard installed and enabled")
        for tview in tviews:
            if tview.name in broken:
                continue  # its table cannot be compared with its definition
            drift = verify_mod.verify_tview(conn, tview, repair=True)
            if drift.drifted:
                actions.append(f"{drift.tview}: {drift.repaired_rows} rows recomputed "
                               f"({drift.drifted} differed from the definition)")
    return actions


def doctor(conn: psycopg.Connection, *, repair: bool = False) -> Report:
    """Find drift between the catalog and the installed objects; with `repair`, fix it and look again."""
    report = Report(diagnose(conn))
    if repair:
        report.actions = repair_findings(conn, report.findings)
        report.remaining = diagnose(conn)
        report.repaired = True
    return report


def require_healthy(report: Report) -> None:
    """Raise CheckFailed when problems remain."""
    if report.ok:
        return
    problems = report.problems
    raise CheckFailed(
        f"{len(problems)} problems {'remain after the repair' if report.repaired else 'found'}: "
        + "; ".join(f"{f.tview + ': ' if f.tview else ''}{f.problem}" for f in problems[:3])
        + (" …" if len(problems) > 3 else ""),
        hint=problems[0].fix,
    )
