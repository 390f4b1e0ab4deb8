"""Refresh modes and the async queue: alter, worker, queue."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .. import engine, worker
from . import app, state


@app.command("alter")
def alter(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="TVIEW name")],
    mode: Annotated[str, typer.Option("--mode", help="immediate, deferred or async")],
) -> None:
    """Change the refresh mode of a TVIEW (leaving async applies its queued changes first)."""
    st = state(ctx)
    with st.connect() as conn:
        tview = engine.alter(conn, name, mode=mode)
    st.out.emit(tview.as_dict(), lambda c: c.print(f"{tview.name}: mode {tview.mode}"))


@app.command("worker")
def worker_cmd(
    ctx: typer.Context,
    batch: Annotated[int, typer.Option("--batch", help="Queue items per round (one transaction); grows up to 16x while a backlog lasts")] = 500,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between polls when no notification comes")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="Drain what is pending and exit")] = False,
) -> None:
    """Apply queued changes of async TVIEWs (LISTEN/NOTIFY); stops cleanly on SIGTERM or SIGINT."""
    st = state(ctx)
    if once:
        with st.connect() as conn:
            handled = worker.drain(conn, batch)
        st.out.emit({"items": handled}, lambda c: c.print(f"applied {handled} queued changes"))
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    st.out.note(f"pg_tviews worker on {st.target().describe()}: waiting for changes (Ctrl-C to stop)")

    def on_round(handled: int) -> None:
        if handled:
            st.out.note(f"applied {handled} queued changes")

    stats = worker.run(st.connect, stop=stop, batch=batch, poll_interval=poll, on_round=on_round)
    st.out.emit(stats.__dict__, lambda c: c.print(f"worker stopped after {stats.items} items in {stats.rounds} rounds"))


@app.command("queue")
def queue(
    ctx: typer.Context,
    drain: Annotated[bool, typer.Option("--drain", help="Apply all pending changes now")] = False,
) -> None:
    """Show the async queue (pending, failed, oldest age); --drain applies it now."""
    st = state(ctx)
    with st.connect() as conn:
        handled = worker.drain(conn) if drain else None
        status = worker.status(conn)

    def render(console: Console) -> None:
        if handled is not None:
            console.print(f"applied {handled} queued changes")
        age = f"{status.oldest_pending_age_s:.1f}s" if status.oldest_pending_age_s is not None else "-"
        console.print(f"pending {status.pending}, failed {status.failed}, processed {status.processed}, oldest pending {age}")
        if status.per_tview:
            table = Table("TVIEW", "pending", "failed", "last error")
            for row in status.per_tview:
                table.add_row(row["tview"] or "(dropped)", str(row["pending"]), str(row["failed"]), row["last_error"] or "")
            console.print(table)

    st.out.emit(status.as_dict() | ({"drained": handled} if handled is not None else {}), render)
