"""`pg-tviews validate`: is the database in a good state (after an upgrade, a restore, ...)?

Catalog version; every TVIEW's objects and triggers present and enabled; every TVIEW exactly equal
to its definition; sequences not behind the columns they feed; the health check clean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import psycopg

from .. import catalog

#: the runtime functions generated code calls; a catalog missing one cannot maintain TVIEWs
RUNTIME_INTERFACE = (
    "tviews.arm(pg_snapshot)",
    "tviews.spill(integer,text,text)",
    "tviews.contend(integer,bigint[])",
    "tviews.enqueue(integer,bigint[],jsonb,boolean)",
    "tviews.open_gate()",
    "tviews.lock_class()",
)


@dataclass
class Finding:
    check: str
    status: str  # ok, warn, fail
    message: str
    hint: str | None = None


@dataclass
class Validation:
    version: str | None
    mode: str | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.status != "fail" for f in self.findings)

    def as_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}


def structure(conn: psycopg.Connection, expected_version: str | None = None) -> list[Finding]:
    """Fast checks of objects only: version, runtime interface, each TVIEW's objects and triggers."""
    found = catalog.installed(conn)
    findings = []
    if expected_version and found.version != expected_version:
        findings.append(Finding("version", "fail", f"catalog is at {found.version}, expected {expected_version}"))
    else:
        findings.append(Finding("version", "ok", f"catalog {found.version} ({found.mode} mode)"))
    missing = [sig for sig in RUNTIME_INTERFACE
               if conn.execute("SELECT to_regprocedure(%s) IS NULL", (sig,)).fetchone()[0]]
    findings.append(Finding("runtime", "fail" if missing else "ok",
                            f"runtime functions missing: {', '.join(missing)}" if missing
                            else "runtime interface of generated objects present",
                            "reinstall or migrate the catalog" if missing else None))
    for component, status, message, _severity in conn.execute(
        "SELECT * FROM tviews.pg_tviews_health_check(-1) WHERE component IN ('catalog', 'triggers') AND status <> 'ok'"
        if conn.execute("SELECT to_regprocedure('tviews.pg_tviews_health_check(integer)') IS NOT NULL").fetchone()[0]
        else "SELECT NULL, NULL, NULL, NULL WHERE false"
    ):
        findings.append(Finding(component, status, message, "run `pg-tviews doctor --repair`"))
    return findings


def consistency(conn: psycopg.Connection) -> list[Finding]:
    """Every TVIEW exactly equal to its backing definition."""
    findings = []
    for schema, table, entity in conn.execute(
        "SELECT schema_name, table_name, id FROM tviews.entity ORDER BY rank, id"
    ).fetchall():
        target = psycopg.sql.Identifier(schema, table)
        view = psycopg.sql.Identifier("tviews", f"tv{entity}_def")
        extra, missing = conn.execute(
            psycopg.sql.SQL("SELECT (SELECT count(*) FROM (SELECT * FROM {t} EXCEPT ALL SELECT * FROM {v}) a),"
                            " (SELECT count(*) FROM (SELECT * FROM {v} EXCEPT ALL SELECT * FROM {t}) b)"
                            ).format(t=target, v=view)
        ).fetchone()
        name = f"{schema}.{table}"
        if extra or missing:
            findings.append(Finding("consistency", "fail", f"{name}: {extra} stale or extra rows, {missing} missing rows",
                                    f"repair with `pg-tviews verify {name} --repair` or `pg-tviews refresh {name}`"))
        else:
            findings.append(Finding("consistency", "ok", f"{name} equals its definition"))
    return findings


def sequences(conn: psycopg.Connection) -> list[Finding]:
    """Sequences behind the maximum of the column they feed (a classic after a restore)."""
    findings = []
    for seq, table, column in conn.execute(
        "SELECT s.oid::regclass::text, t.oid::regclass::text, a.attname"
        "  FROM pg_catalog.pg_depend d"
        "  JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'"
        "  JOIN pg_catalog.pg_class t ON t.oid = d.refobjid"
        "  JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid"
        "  JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace"
        " WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i')"
        "   AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    ).fetchall():
        behind = conn.execute(
            psycopg.sql.SQL("SELECT (SELECT max({c}) FROM {t}) > (SELECT CASE WHEN is_called THEN last_value"
                            " ELSE last_value - 1 END FROM {s})").format(
                c=psycopg.sql.Identifier(column), t=psycopg.sql.SQL(table), s=psycopg.sql.SQL(seq))
        ).fetchone()[0]
        if behind:
            findings.append(Finding("sequences", "fail", f"{seq} is behind max({table}.{column})",
                                    f"SELECT setval('{seq}', (SELECT max({column}) FROM {table}))"))
    if not findings:
        findings.append(Finding("sequences", "ok", "no sequence is behind its column"))
    return findings


def validate(conn: psycopg.Connection, expected_version: str | None = None) -> Validation:
    found = catalog.require(conn)
    result = Validation(found.version, found.mode)
    result.findings += structure(conn, expected_version)
    result.findings += consistency(conn)
    result.findings += sequences(conn)
    if conn.execute("SELECT to_regprocedure('tviews.pg_tviews_health_check(integer)') IS NOT NULL").fetchone()[0]:
        for component, status, message, severity in conn.execute(
            "SELECT * FROM tviews.pg_tviews_health_check(0)"
            " WHERE severity <> 'info' AND component NOT IN ('catalog', 'triggers', 'drift')"
        ):
            result.findings.append(Finding(f"health:{component}", "fail" if severity == "error" else "warn", message))
    return result
