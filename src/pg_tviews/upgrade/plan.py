"""`pg-tviews upgrade plan` and `upgrade scripts`: what an upgrade will do, before doing it.

The plan lists the chain's steps with their SQL, the risk level, which catalog tables each step
locks, whether any TVIEW must be rebuilt (never: generated objects only use the runtime interface
every version keeps), and this database's facts. As Markdown it is a runbook for this database
and this upgrade; as SQL files it is the same upgrade for DBAs who only run psql on the server.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from pglast import ast, parse_sql

from .. import catalog
from ..catalog import chain as chain_mod
from ..catalog.installer import CATALOG_LOCK_SQL
from .migrate import steps_between

#: throughput assumed when estimating a pg_dump of the database (bytes per second)
DUMP_RATE = 150 * 2**20


@dataclass
class Step:
    script: str
    direction: str
    sql: str
    locks: list[str]


@dataclass
class Plan:
    database: str
    server_version: str
    from_version: str
    to_version: str
    mode: str
    risk: str
    steps: list[Step]
    lock_scope: str
    rebuild: list[str]
    database_bytes: int
    tviews: list[dict] = field(default_factory=list)
    pending_queue: int = 0
    estimated_backup_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def risk_level(source: str, target: str) -> str:
    a, b = chain_mod.version_key(source), chain_mod.version_key(target)
    if a == b:
        return "none"
    if a[0] != b[0]:
        return "major"
    return "minor" if a[1] != b[1] else "patch"


def locked_tables(sql: str) -> list[str]:
    """Catalog relations a script locks exclusively (created, altered or dropped)."""
    found: list[str] = []
    for raw in parse_sql(sql):
        stmt = raw.stmt
        names = []
        if isinstance(stmt, ast.AlterTableStmt):
            names.append(stmt.relation)
        elif isinstance(stmt, ast.DropStmt):
            names += [o for o in stmt.objects if isinstance(o, (list, tuple))]
        elif isinstance(stmt, (ast.CreateStmt, ast.IndexStmt)):
            names.append(stmt.relation)
        for name in names:
            if isinstance(name, ast.RangeVar):
                label = f"{name.schemaname}.{name.relname}" if name.schemaname else name.relname
            else:
                label = ".".join(part.sval for part in name)
            if label not in found:
                found.append(label)
    return found


def plan(conn: psycopg.Connection, to_version: str | None = None) -> Plan:
    found = catalog.require(conn)
    target = to_version or chain_mod.load().current
    scripts = steps_between(found, target)
    steps = [Step(s.name, s.direction, s.sql, locked_tables(s.sql)) for s in scripts]
    size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    tviews = [
        {"name": name, "rows": int(rows), "bytes": size_bytes, "mode": mode}
        for name, rows, size_bytes, mode in conn.execute(
            "SELECT format('%I.%I', e.schema_name, e.table_name), greatest(c.reltuples, 0),"
            "       pg_total_relation_size(c.oid), e.mode"
            "  FROM tviews.entity e JOIN pg_catalog.pg_class c"
            "    ON c.oid = to_regclass(format('%I.%I', e.schema_name, e.table_name)) ORDER BY 1")
    ]
    pending = conn.execute("SELECT count(*) FROM tviews.queue WHERE processed_at IS NULL").fetchone()[0]
    tables = sorted({t for s in steps for t in s.locks})
    lock_scope = (
        "the catalog's advisory lock and ACCESS EXCLUSIVE locks on " + ", ".join(tables)
        + " for the duration of the migration transaction; writers to TVIEW sources wait at commit"
        " (their commit step reads the catalog) until it ends, readers of tv_* tables never wait"
    ) if tables else "none: nothing to migrate"
    return Plan(conn.info.dbname, conn.execute("SHOW server_version").fetchone()[0], found.version, target,
                found.mode, risk_level(found.version, target), steps, lock_scope, [], size, tviews, pending,
                round(size / DUMP_RATE, 1))


def runbook(p: Plan) -> str:
    """The plan as a Markdown runbook for this database and this upgrade."""
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    size_mib = p.database_bytes / 2**20
    tview_lines = "\n".join(f"| {t['name']} | {t['mode']} | {t['rows']:,} | {t['bytes'] / 2**20:.1f} MiB |"
                            for t in p.tviews) or "| (none) | | | |"
    steps = "\n".join(f"{i}. `{s.script}` ({s.direction}; locks {', '.join(s.locks) or 'nothing'})"
                      for i, s in enumerate(p.steps, 1)) or "Nothing to migrate: the catalog is already there."
    method = ("ALTER EXTENSION pg_tviews UPDATE (the extension files must be installed on the server)"
              if p.mode == "extension" else "the chain's scripts, applied by pg-tviews in one transaction")
    return f"""# Runbook: pg_tviews {p.from_version} → {p.to_version} on `{p.database}`

Generated {when} from the database itself. Risk: **{p.risk}**. TVIEWs to rebuild: **{'none' if not p.rebuild else ', '.join(p.rebuild)}**.

## Facts

* PostgreSQL {p.server_version}; database size {size_mib:.1f} MiB; install mode: {p.mode}
* {len(p.tviews)} TVIEWs; {p.pending_queue} pending queue items
* Estimated backup time: {p.estimated_backup_s:.0f} s; the migration itself takes well under a second

| TVIEW | mode | rows | size |
| --- | --- | --- | --- |
{tview_lines}

## 1. Preparation

- [ ] `pg-tviews upgrade check --to {p.to_version}` passes (exit code 0; the report is kept)
- [ ] at least {2 * size_mib:.0f} MiB free on the server's disk
- [ ] the async queue is drained if possible: `pg-tviews queue --drain`
- [ ] no prepared transactions: `SELECT * FROM pg_prepared_xacts`
- [ ] application code scanned for changed API: `pg-tviews scan-code <paths>`

## 2. Execution

Method: {method}. Steps:

{steps}

Lock scope: {p.lock_scope}.

```sh
pg-tviews upgrade run --to {p.to_version} --backup-dir ./backup-{p.database}-{p.from_version}
```

The run backs up and verifies the backup, migrates in one transaction (all or nothing), validates,
and journals itself (`pg-tviews upgrade history`).

## 3. Validation

```sh
pg-tviews validate
pg-tviews health
```

Success criteria: `upgrade run` exits 0 and reports `succeeded`; `validate` exits 0 (catalog
{p.to_version}, every TVIEW's objects and triggers present, every TVIEW equal to its definition,
no sequence behind its column); writes to source tables keep updating the TVIEWs.

## 4. Rollback

```sh
pg-tviews upgrade rollback            # back to {p.from_version} through the down steps
pg-tviews upgrade rollback --restore  # or: restore the backup taken by the run
```

## 5. Handover

- [ ] `pg-tviews upgrade history` shows the run as succeeded
- [ ] the check report, this runbook and the backup location are filed with the change
"""


def write_scripts(conn: psycopg.Connection, to_version: str, out: str | Path) -> list[str]:
    """The upgrade as SQL files for psql: pre-upgrade checks, migration, post-upgrade validation."""
    p = plan(conn, to_version)
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    checks = f"""-- pg_tviews {p.from_version} -> {p.to_version}: pre-upgrade checks (every query should return what its comment says)
\\set ON_ERROR_STOP on
-- the installed version: {p.from_version}
SELECT tviews.pg_tviews_version();
-- no prepared transactions: 0
SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database();
-- failed queue items: 0; pending items and the age of the oldest
SELECT count(*) FILTER (WHERE error_message IS NOT NULL AND processed_at IS NULL) AS failed,
       count(*) FILTER (WHERE processed_at IS NULL) AS pending,
       clock_timestamp() - min(created_at) FILTER (WHERE processed_at IS NULL) AS oldest
  FROM tviews.queue;
-- every TVIEW equal to its definition: no rows
{_drift_queries(conn)}
"""
    if p.mode == "extension":
        migration = f"ALTER EXTENSION pg_tviews UPDATE TO '{p.to_version}';\n"
    else:
        migration = "".join(f"-- {s.script}\n{s.sql.rstrip()}\n\n" for s in p.steps) + "".join(
            f"INSERT INTO tviews.schema_migration (script, from_version, to_version, direction, checksum)"
            f" VALUES ('{s.name}', '{s.source}', '{s.target}', '{s.direction}', '{s.checksum}');\n"
            for s in steps_between(catalog.require(conn), to_version))
    migrate_sql = (f"-- pg_tviews {p.from_version} -> {p.to_version}: the migration, all or nothing\n"
                   "\\set ON_ERROR_STOP on\nBEGIN;\n" + CATALOG_LOCK_SQL + ";\n" + migration + "COMMIT;\n")
    validation = f"""-- pg_tviews {p.from_version} -> {p.to_version}: post-upgrade validation
\\set ON_ERROR_STOP on
-- the new version: {p.to_version}
SELECT tviews.pg_tviews_version();
-- findings of the health check (no 'fail' expected)
SELECT * FROM tviews.pg_tviews_health_check(0) WHERE status <> 'ok';
-- every TVIEW equal to its definition: no rows
{_drift_queries(conn)}
"""
    names = []
    for name, text in (("01-pre-upgrade-checks.sql", checks), ("02-migrate.sql", migrate_sql),
                       ("03-post-upgrade-validation.sql", validation)):
        (directory / name).write_text(text)
        names.append(str(directory / name))
    return names


def _drift_queries(conn: psycopg.Connection) -> str:
    lines = []
    for schema, table, entity in conn.execute("SELECT schema_name, table_name, id FROM tviews.entity ORDER BY id"):
        target = psycopg.sql.Identifier(schema, table).as_string(conn)
        view = psycopg.sql.Identifier("tviews", f"tv{entity}_def").as_string(conn)
        lines.append(f"(SELECT {psycopg.sql.Literal(f'{schema}.{table}').as_string(conn)} AS tview, 'stale or extra' AS problem, count(*)"
                     f" FROM (SELECT * FROM {target} EXCEPT ALL SELECT * FROM {view}) d HAVING count(*) > 0)\n"
                     f"UNION ALL (SELECT {psycopg.sql.Literal(f'{schema}.{table}').as_string(conn)}, 'missing', count(*)"
                     f" FROM (SELECT * FROM {view} EXCEPT ALL SELECT * FROM {target}) d HAVING count(*) > 0)")
    return ("\nUNION ALL ".join(lines) + ";") if lines else "SELECT 'no TVIEWs' WHERE false;"
