"""PostgreSQL upgrades under TVIEWs: pg-upgrade minor / major / rollback, and migrate (logical)."""

from __future__ import annotations

import contextlib
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..errors import UsageError
from ..upgrade import logical, pgupgrade
from . import app, state
from .upgrade_cmds import progress_bar, render_checks

pg_upgrade_app = typer.Typer(help="Upgrade PostgreSQL under TVIEWs: minor versions, major versions with "
                                  "pg_upgrade, rollback.", no_args_is_help=True)
app.add_typer(pg_upgrade_app, name="pg-upgrade")

BINDIR_HELP = "bin directory of a PostgreSQL installation, or `embedded`"
USER_HELP = "Superuser to connect as (a password comes from PGPASSWORD or ~/.pgpass)"


@contextlib.contextmanager
def step_progress(st):
    """A bar while a step runs, then one line per finished step with its time; nothing with --json."""
    with progress_bar(st) as bar:
        started: dict[str, float] = {}

        def update(what: str, done: int, total: int) -> None:
            bar(what, done, total)
            if st.out.json:
                return
            if done < total:
                started.setdefault(what, time.monotonic())
            elif what in started:
                st.out.err.print(f"[green]done[/] {what} ({time.monotonic() - started.pop(what):.1f} s)")

        yield update


def _steps_table(steps) -> Table:
    table = Table("step", "seconds")
    for step in steps:
        table.add_row(step.name, f"{step.seconds:.2f}")
    return table


def render_upgrade(result: pgupgrade.PgUpgradeResult):
    def render(console: Console) -> None:
        if result.checks:
            render_checks(result.checks, "pre-upgrade checks")(console)
        if result.steps:
            console.print(_steps_table(result.steps))
        for db in result.databases:
            if db.findings:
                render_checks(db.findings, f"database {db.database}: pg_tviews {db.catalog_version} "
                              f"({db.catalog_mode} mode)")(console)
        for note in result.notes:
            console.print(f"note: {note}", markup=False, highlight=False)
        headline = {"minor": "minor upgrade", "major": f"major upgrade ({result.method} mode)",
                    "rollback": "rollback"}[result.kind]
        console.print(f"[bold]{result.result}[/]: {headline}, PostgreSQL {result.from_version} -> "
                      f"{result.to_version} in {result.duration_s:.1f} s" + (f", port {result.port}" if result.port else ""))
        if result.rollback:
            console.print(f"rollback: {result.rollback}", markup=False, highlight=False)
        if result.error:
            console.print(f"[yellow]{result.error}[/]")

    return render


def _run(st, action, render):
    """Run `action(progress)`; a refusal still shows its checks (or JSON) before the error."""
    try:
        with step_progress(st) as progress:
            result = action(progress)
    except pgupgrade.UpgradeRefused as refused:
        st.out.emit(refused.result, render(refused.result))
        raise
    st.out.emit(result, render(result))
    if not result.ok:
        raise typer.Exit(1)


@pg_upgrade_app.command("minor")
def minor(
    ctx: typer.Context,
    data_dir: Annotated[str, typer.Option("--data-dir", help="The cluster's data directory")],
    old_bindir: Annotated[str, typer.Option("--old-bindir", help=f"Running binaries: {BINDIR_HELP}")],
    new_bindir: Annotated[str, typer.Option("--new-bindir", help=f"New minor version: {BINDIR_HELP}")],
    user: Annotated[str, typer.Option("--user", help=USER_HELP)] = "postgres",
) -> None:
    """Restart a cluster on another minor version's binaries: checks, clean shutdown, start, validation."""
    st = state(ctx)
    _run(st, lambda progress: pgupgrade.minor(data_dir, old_bindir, new_bindir, user=user, progress=progress),
         render_upgrade)


@pg_upgrade_app.command("major")
def major(
    ctx: typer.Context,
    old_bindir: Annotated[str, typer.Option("--old-bindir", help=f"Old major: {BINDIR_HELP}")],
    old_datadir: Annotated[str, typer.Option("--old-datadir", help="The cluster to upgrade")],
    new_bindir: Annotated[str, typer.Option("--new-bindir", help=f"New major: {BINDIR_HELP}")],
    new_datadir: Annotated[str, typer.Option("--new-datadir", help="Absent or empty: initialised with the old "
                                                                   "cluster's settings")],
    link: Annotated[bool, typer.Option("--link", help="Hard-link data files: fast, no rollback")] = False,
    copy: Annotated[bool, typer.Option("--copy", help="Copy data files (default): the old cluster stays "
                                                      "startable for `pg-upgrade rollback`")] = False,
    jobs: Annotated[int, typer.Option("--jobs", help="Parallel jobs of pg_upgrade and vacuumdb")] = 1,
    user: Annotated[str, typer.Option("--user", help=USER_HELP)] = "postgres",
) -> None:
    """pg_upgrade to a newer major: checks, initdb, pg_upgrade --check, upgrade, statistics, validation."""
    st = state(ctx)
    if link and copy:
        raise UsageError("--link and --copy exclude each other", hint="choose one (copy is the default)")
    method = "link" if link else "copy"
    _run(st, lambda progress: pgupgrade.major(old_bindir, old_datadir, new_bindir, new_datadir, method=method,
                                              jobs=jobs, user=user, progress=progress), render_upgrade)


@pg_upgrade_app.command("rollback")
def rollback(
    ctx: typer.Context,
    new_datadir: Annotated[str, typer.Option("--new-datadir", help="The new data directory of the upgrade")],
    user: Annotated[str | None, typer.Option("--user", help=f"{USER_HELP} (default: the upgrade's)")] = None,
) -> None:
    """Start the old cluster of a copy-mode major upgrade again (the new one must be stopped)."""
    st = state(ctx)
    _run(st, lambda progress: pgupgrade.rollback(new_datadir, user=user, progress=progress), render_upgrade)


def render_migration(result: logical.MigrationResult):
    def render(console: Console) -> None:
        if result.checks:
            render_checks(result.checks, "pre-migration checks")(console)
        if result.steps:
            console.print(_steps_table(result.steps))
        if result.tables:
            table = Table("table", "source rows", "target rows", title="row counts")
            for t in result.tables:
                style = "" if t.source == t.target else "[bold red]"
                table.add_row(t.table, str(t.source), f"{style}{t.target if t.target is not None else 'missing'}")
            console.print(table)
        if result.findings:
            render_checks(result.findings, "validation on the target")(console)
        console.print(f"[bold]{result.result}[/]: {result.source} (PostgreSQL {result.source_version}) -> "
                      f"{result.target} (PostgreSQL {result.target_version}) in {result.duration_s:.1f} s with "
                      f"{result.tools}", markup=True, highlight=False)
        if result.error:
            console.print(f"[yellow]{result.error}[/]")

    return render


@app.command("migrate")
def migrate(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--from", help="Source database DSN")],
    target: Annotated[str, typer.Option("--to", help="Target DSN; its database is created when absent, "
                                                     "refused when not empty")],
    jobs: Annotated[int, typer.Option("--jobs", help="pg_dump/pg_restore parallel jobs")] = 2,
    dump_dir: Annotated[str | None, typer.Option("--dump-dir", help="Keep the dump here (new or empty "
                                                                     "directory); default: a temporary one")] = None,
) -> None:
    """Logical migration with the target major's pg_dump/pg_restore; TVIEWs arrive alive, checked."""
    st = state(ctx)
    _run(st, lambda progress: logical.migrate(source, target, jobs=jobs, dump_dir=dump_dir, progress=progress),
         render_migration)
