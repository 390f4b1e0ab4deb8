"""TVIEW commands: create, drop, refresh, list, show, explain, apply."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from psycopg import sql as pgsql
from rich.table import Table

from .. import engine
from ..apply import apply_files
from ..errors import UsageError
from . import app, state


def _definition_text(sql: str | None, file: Path | None, stdin: bool) -> str:
    given = [x for x in (sql is not None, file is not None, stdin) if x]
    if len(given) != 1:
        raise UsageError("give the definition exactly once: --sql TEXT, --file F, or - (standard input)")
    if sql is not None:
        return sql
    if file is not None:
        if not file.is_file():
            raise UsageError(f"{file}: no such file")
        return file.read_text()
    return sys.stdin.read()


def _render_tview(tview: engine.TView):
    def render(console: Console) -> None:
        # names are user text: escaped, so that brackets in them are not read as rich markup
        console.print(f"[bold]{escape(tview.name)}[/] (id {tview.id}): key {escape(tview.key)}, mode {tview.mode},"
                      f" rank {tview.rank}")
        console.print(f"  root     {escape(tview.root)}")
        for source in tview.sources:
            reads = escape(", ".join(source.columns_read))
            console.print(f"  source   {escape(source.name)} ({source.kind}) reads {reads}")
        if tview.helper_views:
            console.print(f"  via      {escape(', '.join(tview.helper_views))}")

    return render


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="TVIEW table name, optionally schema-qualified (tv_post, app.tv_post)")],
    stdin: Annotated[str | None, typer.Argument(help="'-' to read the definition from standard input")] = None,
    sql: Annotated[str | None, typer.Option("--sql", help="The defining SELECT")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="File holding the defining SELECT")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Key column (default: first pk_* column)")] = None,
    mode: Annotated[str, typer.Option("--mode", help="immediate, deferred or async")] = "immediate",
) -> None:
    """Create a TVIEW from a SELECT and populate it."""
    if stdin not in (None, "-"):
        raise UsageError(f"unexpected argument {stdin!r}", hint="use - to read the definition from standard input")
    text = _definition_text(sql, file, stdin == "-")
    st = state(ctx)
    with st.connect() as conn:
        tview = engine.create(conn, name, text, key=key, mode=mode)
        rows = conn.execute(
            pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(tview.schema, tview.table))
        ).fetchone()[0]

    def render(console: Console) -> None:
        _render_tview(tview)(console)
        console.print(f"  rows     {rows}")

    st.out.emit(tview.as_dict() | {"rows": rows}, render)


@app.command("drop")
def drop(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="TVIEW name")],
    if_exists: Annotated[bool, typer.Option("--if-exists", help="No error when it does not exist")] = False,
) -> None:
    """Drop a TVIEW: its table, triggers and generated functions."""
    st = state(ctx)
    with st.connect() as conn:
        dropped = engine.drop(conn, name, if_exists=if_exists)
    st.out.emit({"name": name, "dropped": dropped},
                lambda c: c.print(f"dropped {escape(name)}" if dropped
                                  else f"{escape(name)} does not exist (nothing to do)"))


@app.command("refresh")
def refresh(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="TVIEW name")],
    key: Annotated[list[int] | None, typer.Option("--key", "-k", help="Refresh only this key (repeatable)")] = None,
) -> None:
    """Recompute a TVIEW (all rows, or the given keys); prints the rows changed."""
    st = state(ctx)
    with st.connect() as conn:
        changed = engine.refresh(conn, name, key or None)
    st.out.emit({"name": name, "rows_changed": changed}, lambda c: c.print(f"{escape(name)}: {changed} rows changed"))


@app.command("list")
def list_cmd(ctx: typer.Context) -> None:
    """List the TVIEWs of the database."""
    st = state(ctx)
    with st.connect() as conn:
        tviews = engine.list_tviews(conn)

    def render(console: Console) -> None:
        table = Table("TVIEW", "key", "mode", "rank", "sources")
        for t in tviews:
            sources = ", ".join(s.name for s in t.sources)
            table.add_row(escape(t.name), escape(t.key), t.mode, str(t.rank), escape(sources))
        console.print(table if tviews else "no TVIEWs")

    st.out.emit([t.as_dict() for t in tviews], render)


@app.command("show")
def show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="TVIEW name")]) -> None:
    """Show a TVIEW: definition, key, mode, sources."""
    st = state(ctx)
    with st.connect() as conn:
        tview = engine.get(conn, name)

    def render(console: Console) -> None:
        _render_tview(tview)(console)
        console.print(tview.definition, markup=False, highlight=False)

    st.out.emit(tview.as_dict(), render)


@app.command("explain")
def explain(ctx: typer.Context, name: Annotated[str, typer.Argument(help="TVIEW name")]) -> None:
    """Print the maintenance plan: lineage per source, triggers, missing indexes, refresh SQL."""
    st = state(ctx)
    with st.connect() as conn:
        plan = engine.explain(conn, name)

    def render(console: Console) -> None:
        _render_tview(plan.tview)(console)
        console.print(f"  root access for a key: {escape(plan.root_access)}")
        for source in plan.sources:
            reads = escape(", ".join(source.columns_read))
            console.print(f"\n[bold]source {escape(source.name)}[/] ({source.kind}); reads {reads}")
            for trigger in source.triggers:
                console.print(f"  trigger {trigger['name']} {trigger['event']}{'' if trigger['enabled'] else ' [red](disabled)[/]'}")
            for lineage in source.lineage:
                console.print("  lineage:")
                console.print(f"    {lineage}", markup=False, highlight=False)
        if plan.missing_indexes:
            console.print("\n[bold yellow]lookups without a supporting index[/]")
            for missing in plan.missing_indexes:
                console.print(f"  {escape(missing.table)} ({escape(', '.join(missing.columns))}) for {missing.purpose}:"
                              f" {escape(missing.create_sql)};")
        console.print("\n[bold]refresh function[/]")
        console.print(plan.refresh_sql, markup=False, highlight=False)

    st.out.emit(plan, render)


@app.command("apply")
def apply(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="SQL files, run in order in one transaction")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Run everything, report, then roll back")] = False,
) -> None:
    """Run SQL files; every CREATE TABLE tv_* AS SELECT becomes a TVIEW."""
    st = state(ctx)
    with st.connect() as conn:
        result = apply_files(conn, files, dry_run=dry_run)

    def render(console: Console) -> None:
        for step in result.steps:
            marker = "[green]TVIEW[/]" if step.action == "tview" else "sql  "
            console.print(f"{marker} {step.file}:{step.line}  {step.summary}")
        verb = "would apply" if dry_run else "applied"
        console.print(f"{verb} {len(result.steps)} statements, {len(result.tviews)} TVIEWs"
                      + (" (dry run: rolled back)" if dry_run else ""))

    st.out.emit(result, render)
