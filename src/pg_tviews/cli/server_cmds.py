"""``pg-tviews server ...``: the embedded PostgreSQL server."""

from __future__ import annotations

from collections.abc import Callable

import typer
from rich.console import Console

from ..errors import ServerError
from ..server import ServerStatus, embedded
from . import app, state

server_app = typer.Typer(help="Manage the embedded PostgreSQL server (the default target).", no_args_is_help=True)
app.add_typer(server_app, name="server")


def render_status(status: ServerStatus) -> Callable[[Console], None]:
    def render(console: Console) -> None:
        if status.actions:
            console.print(f"[bold]{', '.join(status.actions)}[/]: embedded PostgreSQL {status.version}")
        console.print(f"  data directory  {status.data_dir}")
        if status.running:
            console.print(f"  running         pid {status.pid}, port {status.port}")
            console.print(f"  connect with    psql '{status.url}'")
        else:
            console.print("  not running     start it with `pg-tviews server start`")

    return render


@server_app.command("start")
def start(ctx: typer.Context) -> None:
    """Initialise (first use) and start the embedded server; reuses a running one."""
    st = state(ctx)
    status = embedded.ensure_running(st.data_dir)
    st.out.emit(status, render_status(status))


@server_app.command("stop")
def stop(ctx: typer.Context) -> None:
    """Stop the embedded server."""
    st = state(ctx)
    status = embedded.stop(st.data_dir)
    st.out.emit(status, render_status(status))


@server_app.command("status")
def status_cmd(ctx: typer.Context) -> None:
    """Show whether the embedded server runs, where, and how to connect."""
    st = state(ctx)
    status = embedded.status(st.data_dir)
    st.out.emit(status, render_status(status))


@server_app.command("url")
def url(ctx: typer.Context) -> None:
    """Print the connection URL of the running embedded server (for psql or DATABASE_URL)."""
    st = state(ctx)
    status = embedded.status(st.data_dir)
    if not status.running:
        raise ServerError("the embedded server is not running", hint="start it with `pg-tviews server start`")
    st.out.emit({"url": status.url}, lambda console: console.print(status.url))
