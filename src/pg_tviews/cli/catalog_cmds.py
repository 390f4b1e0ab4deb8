"""``pg-tviews install`` and ``pg-tviews quickstart``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import bench, catalog
from ..connection import Target, connect
from ..ops import demo
from ..server import embedded
from . import app, state
from .ops_cmds import status_screen


@app.command("install")
def install(
    ctx: typer.Context,
    version: Annotated[str | None, typer.Option("--version", help="Catalog version (default: current)")] = None,
    mode: Annotated[str, typer.Option("--mode", help="schema (scripts applied from here) or extension "
                                                      "(CREATE EXTENSION; files installed on the server)")] = "schema",
) -> None:
    """Install the pg_tviews catalog (schema tviews) in the database; idempotent."""
    st = state(ctx)
    with st.connect() as conn:
        result = catalog.install(conn, version, mode=mode)

    def render(console: Console) -> None:
        if result.changed:
            console.print(f"installed pg_tviews {result.version} ({result.mode} mode): {', '.join(result.applied)}")
        else:
            console.print(f"pg_tviews {result.version} is already installed ({result.mode} mode)")
        if result.search_path:
            console.print(result.search_path)

    st.out.emit(result, render)


@app.command("quickstart")
def quickstart(
    ctx: typer.Context,
    no_demo: Annotated[bool, typer.Option("--no-demo", help="Only start the server and install the catalog")] = False,
    no_bench: Annotated[bool, typer.Option("--no-bench", help="Run the demo without the benchmark")] = False,
) -> None:
    """Start the embedded server, install the catalog, and run the demo: the blog read model
    following writes, the status screen and a benchmark against REFRESH MATERIALIZED VIEW."""
    st = state(ctx)
    if st.dsn:
        target = Target(st.dsn, "--dsn")
        server = None
    else:
        server = embedded.ensure_running(st.data_dir)
        target = Target(server.url or "", "embedded server")
    with connect(target, autocommit=True) as conn:
        result = catalog.install(conn)
        pg_version = conn.execute("SHOW server_version").fetchone()[0]
    if server:
        st.out.note(f"[bold]embedded PostgreSQL {pg_version}[/]: {', '.join(server.actions)}"
                    f"\n  data directory  {server.data_dir}")
    else:
        st.out.note(f"[bold]PostgreSQL {pg_version}[/] at {target.describe()}")
    state_word = "installed" if result.changed else "already installed"
    st.out.note(f"[bold]pg_tviews {result.version}[/]: catalog {state_word} (schema tviews)")
    report_demo = None if no_demo else demo.run(
        target.dsn, with_bench=not no_bench, progress=lambda message: st.out.note(f"[dim]{escape(message)}[/]"))
    report = {
        "server": server.as_dict() if server else None,
        "url": target.dsn,
        "postgresql": pg_version,
        "catalog": result.as_dict(),
        "demo": report_demo.as_dict() if report_demo else None,
    }

    def render(console: Console) -> None:
        if report_demo:
            _render_demo(console, report_demo)
        console.print(f"\n  connect with    psql '{target.dsn}'")
        console.print("  stop with       pg-tviews server stop")

    st.out.emit(report, render)


def _rows(n: int) -> str:
    return f"{n} TVIEW row{'' if n == 1 else 's'}"


def _render_demo(console: Console, report: demo.DemoReport) -> None:
    """The demo, step by step, for people."""
    console.print(f"\n[bold]1. the read model[/]: {', '.join(report.tviews)} in database {report.database};"
                  f" following post {demo.POST}")
    doc = report.before
    console.print(f"   [dim]before[/]  {doc['title']!r} by {doc['author']}, {doc['comments']} comments")
    for step in report.steps:
        doc = step.document
        console.print(f"   [bold]{step.action}[/]: {escape(step.sql)}")
        console.print(f"     → {doc['title']!r} by {doc['author']}, {doc['comments']} comments"
                      f" [dim]({step.ms:.1f} ms including commit; {_rows(step.rows_rewritten)} rewritten)[/]")
    console.print("\n[bold]2. status[/] ([dim]pg-tviews status[/])")
    console.print(status_screen(report.status))
    if report.bench:
        b = report.bench
        console.print(f"\n[bold]3. writes against REFRESH MATERIALIZED VIEW[/] ({b.scale.posts} posts,"
                      f" {b.scale.comments} comments; median ms per write, commit included)")
        table = Table("operation", "plain write", "pg_tviews", "write + REFRESH MATVIEW", "matview / pg_tviews")
        for operation in bench.OPERATIONS:
            cells = [report.bench.get(operation.name, c) for c in ("plain", "pg_tviews", "matview")]
            ratio = b.ratio(operation.name, "matview", "pg_tviews")
            table.add_row(operation.name, *(f"{m.median_ms:.3f}" if m else "-" for m in cells),
                          f"{ratio:.0f}x" if ratio is not None else "-")
        console.print(table)
    console.print(f"\n[bold]explore further[/] (demo finished in {report.seconds:.1f} s; the database stays):")
    for command in report.explore:
        console.print(f"  {escape(command)}")
