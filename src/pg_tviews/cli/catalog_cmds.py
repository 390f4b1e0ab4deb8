"""``pg-tviews install`` and ``pg-tviews quickstart``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from .. import catalog
from ..connection import Target, connect
from ..server import embedded
from . import app, state


@app.command("install")
def install(
    ctx: typer.Context,
    version: Annotated[str | None, typer.Option("--version", help="Catalog version (default: current)")] = None,
) -> None:
    """Install the pg_tviews catalog (schema tviews) in the database; idempotent."""
    st = state(ctx)
    with st.connect() as conn:
        result = catalog.install(conn, version)

    def render(console: Console) -> None:
        if result.changed:
            console.print(f"installed pg_tviews {result.version} ({result.mode} mode): {', '.join(result.applied)}")
        else:
            console.print(f"pg_tviews {result.version} is already installed ({result.mode} mode)")

    st.out.emit(result, render)


@app.command("quickstart")
def quickstart(ctx: typer.Context) -> None:
    """Start the embedded server, install the catalog and show how to connect."""
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
    report = {
        "server": server.as_dict() if server else None,
        "url": target.dsn,
        "postgresql": pg_version,
        "catalog": result.as_dict(),
    }

    def render(console: Console) -> None:
        if server:
            console.print(f"[bold]embedded PostgreSQL {pg_version}[/]: {', '.join(server.actions)}")
            console.print(f"  data directory  {server.data_dir}")
        else:
            console.print(f"[bold]PostgreSQL {pg_version}[/] at {target.describe()}")
        state_word = "installed" if result.changed else "already installed"
        console.print(f"[bold]pg_tviews {result.version}[/]: catalog {state_word} (schema tviews)")
        console.print(f"  connect with    psql '{target.dsn}'")
        console.print("  stop with       pg-tviews server stop")

    st.out.emit(report, render)
