"""Upgrade tooling: upgrade check/plan/run/rollback/history/scripts, backup, validate, scan-code,
extension install."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .. import catalog
from ..catalog import extension
from ..errors import UpgradeError
from ..upgrade import backup as backup_mod
from ..upgrade import checks as checks_mod
from ..upgrade import journal, migrate, plan as plan_mod, scan
from ..upgrade.validate import validate as validate_db
from . import app, state

upgrade_app = typer.Typer(help="Check, plan, run, roll back and journal catalog upgrades.", no_args_is_help=True)
app.add_typer(upgrade_app, name="upgrade")
backup_app = typer.Typer(help="Backups (pg_dump directory format + manifest) and their verification.",
                         invoke_without_command=True)
app.add_typer(backup_app, name="backup")
extension_app = typer.Typer(help="Install pg_tviews as a PostgreSQL extension (files on the server).",
                            no_args_is_help=True)
app.add_typer(extension_app, name="extension")

STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


@contextlib.contextmanager
def progress_bar(st):
    """A rich progress bar for people, nothing for --json; yields progress(what, done, total)."""
    if st.out.json:
        yield lambda what, done, total: None
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=st.out.err, transient=True)
    tasks: dict[str, int] = {}
    with bar:
        def update(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        yield update


def render_checks(items, title: str):
    def render(console: Console) -> None:
        table = Table(title=title)
        for column in ("check", "status", "message", "hint"):
            table.add_column(column)
        for c in items:
            table.add_row(c.name if hasattr(c, "name") else c.check, f"[{STATUS_STYLE[c.status]}]{c.status}[/]",
                          c.message, c.hint or "")
        console.print(table)

    return render


@upgrade_app.command("check")
def check(
    ctx: typer.Context,
    to: Annotated[str | None, typer.Option("--to", help="Target catalog version (default: current)")] = None,
    target_bindir: Annotated[str | None, typer.Option("--target-bindir",
                                                      help="bin directory of the PostgreSQL that will run the database")] = None,
    sample: Annotated[int, typer.Option("--sample", help="Keys per TVIEW compared with the definition; 0: all")] = 100,
    report: Annotated[Path | None, typer.Option("--report", help="Where to write the JSON report")] = None,
) -> None:
    """Pre-upgrade checks (ok/warn/fail each); exit 1 on any failure; the report is written to a file."""
    st = state(ctx)
    result = checks_mod.run_checks(st.target().dsn, to, target_bindir=target_bindir, sample=sample)
    path = checks_mod.write_report(result, report)

    def render(console: Console) -> None:
        render_checks(result.checks, f"upgrade check{f' to {to}' if to else ''}")(console)
        console.print(f"report written to {path}")

    st.out.emit(result, render)
    if not result.ok:
        raise typer.Exit(1)


@upgrade_app.command("plan")
def plan(
    ctx: typer.Context,
    to: Annotated[str | None, typer.Option("--to", help="Target catalog version (default: current)")] = None,
    format_: Annotated[str, typer.Option("--format", help="text or markdown (a runbook)")] = "text",
) -> None:
    """The ordered steps and their SQL, risk, lock scope, rebuilds (never), or a Markdown runbook."""
    st = state(ctx)
    with st.connect() as conn:
        p = plan_mod.plan(conn, to)
    if format_ == "markdown":
        text = plan_mod.runbook(p)
        st.out.emit({"markdown": text} | p.as_dict(), lambda c: c.print(text, markup=False, highlight=False))
        return

    def render(console: Console) -> None:
        console.print(f"[bold]pg_tviews {p.from_version} -> {p.to_version}[/] ({p.mode} mode): risk {p.risk}; "
                      f"TVIEWs to rebuild: {', '.join(p.rebuild) or 'none'}")
        console.print(f"lock scope: {p.lock_scope}")
        for step in p.steps:
            console.print(f"\n[bold]{step.script}[/] ({step.direction})")
            console.print(step.sql, markup=False, highlight=False)

    st.out.emit(p, render)


def _verified_backup(st, directory: str, jobs: int):
    def make() -> str:
        with progress_bar(st) as progress:
            backup_mod.backup(st.target().dsn, directory, jobs=jobs, progress=progress)
            verified = backup_mod.verify(st.target().dsn, directory, jobs=jobs, progress=progress)
        if not verified.ok:
            bad = next(f for f in verified.findings if f.status == "fail")
            raise UpgradeError(f"the backup in {directory} did not verify: {bad.message}", hint=bad.hint)
        return directory

    return make


@upgrade_app.command("run")
def run(
    ctx: typer.Context,
    to: Annotated[str | None, typer.Option("--to", help="Target catalog version (default: current)")] = None,
    backup_dir: Annotated[str | None, typer.Option("--backup-dir", help="Back up here first (verified)")] = None,
    no_backup: Annotated[bool, typer.Option("--no-backup", help="Do not back up")] = False,
    jobs: Annotated[int, typer.Option("--jobs", help="pg_dump/pg_restore parallel jobs")] = 2,
) -> None:
    """Checks, verified backup, migration in one transaction, validation; journaled."""
    st = state(ctx)
    if not no_backup and not backup_dir:
        raise UpgradeError("say where to back up (--backup-dir DIR), or --no-backup")
    with st.connect() as conn:
        target = to or catalog.load().current
        result = migrate.run(
            conn, target,
            checks=lambda: checks_mod.run_checks(st.target().dsn, target).as_journal(),
            backup=None if no_backup else _verified_backup(st, backup_dir, jobs),
            progress=st.out.note,
        )

    def render(console: Console) -> None:
        console.print(f"[bold]{result.result}[/]: pg_tviews {result.from_version} -> {result.to_version} "
                      f"({result.mode} mode) in {result.duration_ms:.0f} ms; steps: {', '.join(result.steps) or 'none'}")
        if result.backup_dir:
            console.print(f"backup: {result.backup_dir}")
        if result.error:
            console.print(f"[yellow]{result.error}[/]")

    st.out.emit(result, render)
    if result.error:
        raise typer.Exit(1)


@upgrade_app.command("rollback")
def rollback(
    ctx: typer.Context,
    restore: Annotated[bool, typer.Option("--restore", help="Restore the last run's backup instead")] = False,
    jobs: Annotated[int, typer.Option("--jobs", help="pg_restore parallel jobs")] = 2,
) -> None:
    """Down-migrate to the version before the last upgrade (or restore that run's backup)."""
    st = state(ctx)
    with st.connect() as conn:
        if restore:
            entry = next((e for e in reversed(journal.history(conn)) if e.result == "succeeded" and e.backup_dir), None)
            if entry is None:
                raise UpgradeError("no successful run with a backup in the journal",
                                   hint="roll back through the down migrations: pg-tviews upgrade rollback")
            with progress_bar(st) as progress:
                restored = backup_mod.restore(st.target().dsn, entry.backup_dir, jobs=jobs, progress=progress)
            st.out.emit(restored, lambda c: c.print(
                f"restored the backup taken before {entry.from_version} -> {entry.to_version} into database "
                f"{restored.database}; switch the application to it (or rename it) when ready"))
            return
        result = migrate.run(conn, migrate.previous_version(conn), method="rollback", progress=st.out.note)
    st.out.emit(result, lambda c: c.print(f"[bold]{result.result}[/]: rolled back {result.from_version} -> "
                                          f"{result.to_version}"))


@upgrade_app.command("history")
def history(ctx: typer.Context) -> None:
    """Every upgrade run: versions, method, times, duration, result (runs whose session is gone: interrupted)."""
    st = state(ctx)
    with st.connect() as conn:
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):  # a reader that may not write the journal
            journal.close_interrupted(conn)
        entries = journal.history(conn)

    def render(console: Console) -> None:
        table = Table("id", "from", "to", "method", "started", "ms", "result", "error")
        for e in entries:
            table.add_row(str(e.id), e.from_version, e.to_version, e.method, f"{e.started_at:%Y-%m-%d %H:%M:%S}",
                          f"{e.duration_ms:.0f}" if e.duration_ms is not None else "", e.result, e.error or "")
        console.print(table if entries else "no upgrade runs recorded")

    st.out.emit(entries, render)


@upgrade_app.command("scripts")
def scripts(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="Target catalog version")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the SQL files")],
) -> None:
    """The upgrade as psql scripts: pre-upgrade checks, migration, post-upgrade validation."""
    st = state(ctx)
    with st.connect() as conn:
        files = plan_mod.write_scripts(conn, to, out)
    st.out.emit({"files": files}, lambda c: [c.print(f) for f in files])


@backup_app.callback()
def backup_cmd(
    ctx: typer.Context,
    directory: Annotated[str | None, typer.Option("--dir", help="New or empty directory for the backup")] = None,
    jobs: Annotated[int, typer.Option("--jobs", help="pg_dump parallel jobs")] = 2,
) -> None:
    """Back up the database (pg_dump directory format + manifest); `backup verify DIR` proves it."""
    if ctx.invoked_subcommand is not None:
        return
    st = state(ctx)
    if not directory:
        raise UpgradeError("say where to back up: --dir DIR")
    with progress_bar(st) as progress:
        result = backup_mod.backup(st.target().dsn, directory, jobs=jobs, progress=progress)
    st.out.emit(result, lambda c: c.print(f"backed up {result.database} ({result.tables} tables, {result.rows} rows,"
                                          f" catalog {result.catalog_version}) to {result.directory}"
                                          f" in {result.duration_s:.1f} s"))


@backup_app.command("verify")
def backup_verify(
    ctx: typer.Context,
    directory: Annotated[str, typer.Argument(help="Backup directory")],
    jobs: Annotated[int, typer.Option("--jobs", help="pg_restore parallel jobs")] = 2,
) -> None:
    """Restore a backup into a scratch database, compare row counts and TVIEWs, drop it; exit 1 if bad."""
    st = state(ctx)
    with progress_bar(st) as progress:
        result = backup_mod.verify(st.target().dsn, directory, jobs=jobs, progress=progress)
    st.out.emit(result, render_checks(result.findings, f"backup {directory}"))
    if not result.ok:
        raise typer.Exit(1)


@app.command("validate")
def validate(ctx: typer.Context) -> None:
    """Catalog version, TVIEW objects and triggers, exact consistency, sequences, health; exit 1 if bad."""
    st = state(ctx)
    with st.connect() as conn:
        result = validate_db(conn)
    st.out.emit(result, render_checks(result.findings, f"pg_tviews {result.version} ({result.mode} mode)"))
    if not result.ok:
        raise typer.Exit(1)


@app.command("scan-code")
def scan_code(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(help="Files or directories to scan")],
) -> None:
    """Find uses of SQL API changed between versions, with file:line and the replacement; exit 1 if any."""
    st = state(ctx)
    uses = scan.scan(paths)

    def render(console: Console) -> None:
        for u in uses:
            console.print(f"{u.file}:{u.line}:{u.column}: {u.name} ({u.change} in {u.since}) -> {u.replacement}",
                          markup=False, highlight=False)
        console.print(f"{len(uses)} uses found")

    st.out.emit(uses, render)
    if uses:
        raise typer.Exit(1)


@extension_app.command("install")
def extension_install(
    ctx: typer.Context,
    pg_config: Annotated[str | None, typer.Option("--pg-config", help="pg_config of the server installation")] = None,
    sharedir: Annotated[str | None, typer.Option("--sharedir", help="The installation's share directory")] = None,
) -> None:
    """Write pg_tviews.control and every version's scripts into the server's extension directory."""
    st = state(ctx)
    result = extension.install_files(extension.sharedir(pg_config, sharedir))
    st.out.emit(result, lambda c: c.print(f"installed {len(result.files)} files into {result.directory}; "
                                          f"CREATE EXTENSION pg_tviews gives {result.default_version}"))
