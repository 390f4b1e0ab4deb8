"""Operator commands: health, stats, status, graph, metrics, verify, doctor."""

from __future__ import annotations

import datetime as dt
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .. import catalog
from ..bench import Scale
from ..errors import UsageError
from ..ops import doctor as doctor_mod
from ..ops import graph as graph_mod
from ..ops import health as health_mod
from ..ops import metrics as metrics_mod
from ..ops import overhead as overhead_mod
from ..ops import stats as stats_mod
from ..ops import status as status_mod
from ..ops import verify as verify_mod
from . import State, app, state

SEVERITY_STYLE = {"info": "dim", "warning": "yellow", "error": "bold red"}


# -- formatting ----------------------------------------------------------------------------------------


def ago(when: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """`12s ago`, `3m ago`, `2h ago`, `4d ago`; `never` for None."""
    if when is None:
        return "never"
    seconds = max(0.0, ((now or dt.datetime.now(dt.timezone.utc)) - when).total_seconds())
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{int(seconds // length)}{unit} ago"
    return f"{int(seconds)}s ago"


def size(n: int | None) -> str:
    """`512 B`, `1.4 MB`, … (powers of 1024, like pg_size_pretty)."""
    if n is None:
        return "-"
    units = ("B", "kB", "MB", "GB", "TB")
    value, unit = float(n), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{n} B" if unit == 0 else f"{value:.1f} {units[unit]}"


def duration(ms: float | None) -> str:
    """`0.87 ms`, `2.31 s`."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.2f} ms"
    return f"{ms / 1000:.2f} s"


def compact_table(*columns: tuple[str, str]) -> Table:
    """A table that fits 80 columns: thin header rule, no outer edge, single-cell gaps; no wrapping."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
    for header, justify in columns:
        table.add_column(header, justify=justify, no_wrap=True)
    return table


def last_errors(rows: list[tuple[str, int, str | None, dt.datetime | None]], now: dt.datetime | None = None) -> Text:
    """`TVIEW: N failed refreshes, last 3m ago: message` for each (tview, count, message, at) with one."""
    lines = [
        Text.assemble((tview, "bold"), f": {count} failed refreshes, last {ago(at, now)}: ",
                      (message.strip().splitlines()[0], "red"))
        for tview, count, message, at in rows if message
    ]
    return Text("\n").join(lines)


# -- health -------------------------------------------------------------------------------------------------


def health_table(report: health_mod.HealthReport, *, problems_only: bool = False) -> Table:
    table = Table("severity", "component", "finding", box=None, show_header=True, pad_edge=False)
    for finding in (report.problems if problems_only else report.findings):
        style = SEVERITY_STYLE.get(finding.severity, "")
        table.add_row(Text(finding.severity, style=style), Text(finding.component), Text(finding.message, style=style))
    return table


def health_summary(report: health_mod.HealthReport) -> Text:
    counts = report.counts
    verdict = Text("healthy", style="bold green") if report.healthy else Text("unhealthy", style="bold red")
    sampled = "every row" if report.sample == 0 else f"{report.sample} sampled keys per TVIEW"
    return verdict + Text(f": {counts['error']} errors, {counts['warning']} warnings, {counts['info']} info"
                          f" (drift checked on {sampled})")


@app.command("health")
def health(
    ctx: typer.Context,
    sample: Annotated[int, typer.Option("--sample", help="Keys per TVIEW compared with the definition (0: every row)")]
    = health_mod.DEFAULT_SAMPLE,
    strict: Annotated[bool, typer.Option("--strict", help="Fail (exit 1) on warnings too")] = False,
    problems: Annotated[bool, typer.Option("--problems", help="Show only warnings and errors")] = False,
) -> None:
    """Run the health checks (objects, triggers, drift, indexes, repairs, queue); exit 1 on errors."""
    st = state(ctx)
    with st.connect() as conn:
        report = health_mod.check(conn, sample)

    def render(console: Console) -> None:
        if report.findings and (report.problems or not problems):
            console.print(health_table(report, problems_only=problems))
        console.print(health_summary(report))

    st.out.emit(report, render)
    health_mod.require_healthy(report, strict=strict)


# -- stats --------------------------------------------------------------------------------------------------


@app.command("stats")
def stats(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only this TVIEW")] = None,
    no_rollup: Annotated[bool, typer.Option("--no-rollup", help="Read only: do not fold pending refresh events")]
    = False,
) -> None:
    """Refresh statistics per TVIEW: count, rows changed, time spent, last refresh, last error."""
    st = state(ctx)
    with st.connect() as conn:
        rows = stats_mod.collect(conn, name, fold=not no_rollup)

    def render(console: Console) -> None:
        if not rows:
            console.print("no TVIEWs")
            return
        table = compact_table(("TVIEW", "left"), ("mode", "left"), ("refreshes", "right"), ("rows changed", "right"),
                              ("time", "right"), ("mean", "right"), ("last", "left"))
        for s in rows:
            table.add_row(Text(s.tview), s.mode, f"{s.refresh_count:,}", f"{s.rows_changed:,}", duration(s.total_ms),
                          duration(s.mean_ms), ago(s.last_refreshed))
        console.print(table)
        errors = last_errors([(s.tview, s.error_count, s.last_error, s.last_error_at) for s in rows])
        if errors.plain:
            console.print(errors)

    st.out.emit([s.as_dict() for s in rows], render)


# -- status ---------------------------------------------------------------------------------------------------


def status_screen(report: status_mod.StatusReport) -> RenderableType:
    """The status screen: TVIEWs, queue, health."""
    now = report.taken_at
    title = Text.assemble(("pg_tviews ", "bold"), f"{report.catalog_version} · database {report.database} · ",
                          (now.strftime("%Y-%m-%d %H:%M:%S %Z"), "dim"))
    table = compact_table(("TVIEW", "left"), ("mode", "left"), ("rows", "right"), ("size", "right"),
                          ("freshness", "left"), ("refreshes", "right"), ("last refresh", "left"))
    for t in report.tviews:
        rows = "-" if t.rows is None else f"{'~' if t.rows_estimated else ''}{t.rows:,}"
        if t.current:
            freshness = Text("current", style="green")
        else:
            freshness = Text(f"{t.pending} pending, oldest {t.oldest_pending_age_s or 0:.0f}s", style="yellow")
        table.add_row(Text(t.tview), t.mode, rows, size(t.size_bytes), freshness, f"{t.refresh_count:,}",
                      ago(t.last_refreshed, now))
    q = report.queue
    oldest = f"{q.oldest_pending_age_s:.0f}s" if q.oldest_pending_age_s is not None else "-"
    queue_line = Text.assemble(("queue ", "bold"), f"pending {q.pending}, ",
                               (f"failed {q.failed}", "bold red" if q.failed else ""),
                               f", processed {q.processed}, oldest pending {oldest}")
    errors = last_errors([(t.tview, t.error_count, t.last_error, t.last_error_at) for t in report.tviews], now)
    parts: list[RenderableType] = [title, table if report.tviews else Text("no TVIEWs"),
                                   *([errors] if errors.plain else []), queue_line]
    if report.health is not None:
        parts.append(Text("health ", style="bold") + health_summary(report.health))
        if report.health.problems:
            parts.append(health_table(report.health, problems_only=True))
    return Group(*parts)


@app.command("status")
def status(
    ctx: typer.Context,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh the screen until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between refreshes with --watch")] = 2.0,
    sample: Annotated[int, typer.Option("--sample", help="Keys per TVIEW the health check compares (0: all)")]
    = health_mod.DEFAULT_SAMPLE,
    no_health: Annotated[bool, typer.Option("--no-health", help="Skip the health check")] = False,
) -> None:
    """One screen: every TVIEW (size, mode, rows, freshness, last refresh and error), queue, health."""
    st = state(ctx)
    if watch and st.out.json:
        raise UsageError("--watch draws a screen for people; it cannot be combined with --json",
                         hint="poll `pg-tviews --json status` instead")
    if interval <= 0:
        raise UsageError(f"--interval must be positive, not {interval}")
    health_sample = None if no_health else sample
    with st.connect() as conn:
        report = status_mod.collect(conn, health_sample=health_sample)
        if not watch:
            st.out.emit(report, lambda console: console.print(status_screen(report)))
            return
        _watch(st.out.console, lambda: status_screen(status_mod.collect(conn, health_sample=health_sample)),
               status_screen(report), interval)


def _watch(console: Console, draw: Callable[[], RenderableType], first: RenderableType, interval: float) -> None:
    """Redraw until Ctrl-C: in place on a terminal, one snapshot after another elsewhere."""
    try:
        if console.is_terminal:
            with Live(first, console=console, auto_refresh=False, screen=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(draw(), refresh=True)
        else:
            console.print(first)
            while True:
                time.sleep(interval)
                console.rule(style="dim")
                console.print(draw())
    except KeyboardInterrupt:
        console.print("[dim]stopped[/]")


# -- graph ----------------------------------------------------------------------------------------------------


@app.command("graph")
def graph(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only what this TVIEW reads and what reads it")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="mermaid, dot, svg or png")] = "mermaid",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file (else stdout)")] = None,
) -> None:
    """The dependency graph: source tables → TVIEWs → TVIEWs, with refresh modes."""
    st = state(ctx)
    if fmt not in graph_mod.FORMATS:
        raise UsageError(f"unknown graph format {fmt!r}", hint=f"choose one of: {', '.join(graph_mod.FORMATS)}")
    if fmt == "png" and output is None and sys.stdout.isatty():
        raise UsageError("PNG is binary: it is not printed on a terminal", hint="write it to a file: -o graph.png")
    with st.connect() as conn:
        loaded = graph_mod.load(conn, name)
    data = graph_mod.render(loaded, fmt)
    if output is not None:
        output.write_bytes(data)
        st.out.emit({"format": fmt, "output": str(output), "nodes": len(loaded.nodes), "edges": len(loaded.edges)},
                    lambda c: c.print(f"wrote {escape(str(output))} ({fmt}, {len(loaded.nodes)} nodes,"
                                      f" {len(loaded.edges)} edges)"))
    elif st.out.json:
        st.out.emit(loaded.as_dict() | {"format": fmt, "source": data.decode() if fmt != "png" else None})
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


# -- metrics --------------------------------------------------------------------------------------------------

metrics_app = typer.Typer(help="Prometheus metrics of TVIEWs, and what collecting statistics costs.",
                          no_args_is_help=True)
app.add_typer(metrics_app, name="metrics")

HealthSample = Annotated[int, typer.Option("--health-sample",
                                           help="Keys per TVIEW the health check compares (0: every row)")]
NoHealth = Annotated[bool, typer.Option("--no-health", help="Leave out the health metrics")]
NoRollup = Annotated[bool, typer.Option("--no-rollup", help="Read only: do not fold refresh events at scrapes")]


def _collector(ctx: typer.Context, health_sample: int, no_health: bool, health_interval: float,
               no_rollup: bool) -> metrics_mod.TViewsCollector:
    """The collector, after checking once that the database is reachable and has the catalog."""
    st = state(ctx)
    if health_sample < 0:
        raise UsageError(f"--health-sample must be 0 or more, not {health_sample}", hint="0 compares every row")
    with st.connect() as conn:
        catalog.require(conn)
    return metrics_mod.TViewsCollector(st.connect, health_sample=None if no_health else health_sample,
                                       health_interval=health_interval, fold=not no_rollup)


@metrics_app.command("serve")
def metrics_serve(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port of the HTTP endpoint")] = metrics_mod.DEFAULT_PORT,
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "0.0.0.0",
    health_sample: HealthSample = health_mod.DEFAULT_SAMPLE,
    no_health: NoHealth = False,
    health_interval: Annotated[float, typer.Option("--health-interval",
                                                   help="Seconds a health report is reused between scrapes")]
    = metrics_mod.DEFAULT_HEALTH_INTERVAL,
    no_rollup: NoRollup = False,
) -> None:
    """Serve Prometheus metrics on http://HOST:PORT/metrics until SIGTERM or Ctrl-C."""
    st = state(ctx)
    collector = _collector(ctx, health_sample, no_health, health_interval, no_rollup)
    try:
        server, _thread = metrics_mod.serve(collector, host=host, port=port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         hint="choose another --port, or stop what uses it") from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    st.out.note(f"serving pg_tviews metrics of {st.target().describe()} on http://{host}:{server.server_port}/metrics"
                " (Ctrl-C to stop)")
    stop.wait()
    server.shutdown()
    st.out.emit({"port": server.server_port, "stopped": True}, lambda c: c.print("stopped"))


@metrics_app.command("show")
def metrics_show(
    ctx: typer.Context,
    health_sample: HealthSample = health_mod.DEFAULT_SAMPLE,
    no_health: NoHealth = False,
    no_rollup: NoRollup = False,
) -> None:
    """Print the metrics once, in the Prometheus text format (what a scrape returns)."""
    collector = _collector(ctx, health_sample, no_health, 0.0, no_rollup)
    sys.stdout.write(metrics_mod.exposition(collector))


@metrics_app.command("overhead")
def metrics_overhead(
    ctx: typer.Context,
    iterations: Annotated[int, typer.Option("--iterations", help="Single-row writes per variant and round")] = 1000,
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds; the variants alternate within each")] = 4,
    clients: Annotated[int, typer.Option("--clients", help="Concurrent writers for the throughput phase (0: skip)")]
    = 8,
    seconds: Annotated[float, typer.Option("--seconds", help="Duration of each throughput phase")] = 2.0,
    scale: Annotated[float, typer.Option("--scale", help="Data size; 1 = 10k users, 100k posts, 500k comments")]
    = 0.1,
    keep: Annotated[bool, typer.Option("--keep", help=f"Keep the database {overhead_mod.DATABASE}")] = False,
) -> None:
    """Measure what refresh statistics cost writers: with and without the refresh-event insert."""
    st = state(ctx)
    report = overhead_mod.measure(
        st.target().dsn, scale=Scale.scaled(scale), iterations=iterations, rounds=rounds, clients=clients,
        seconds=seconds, progress=lambda message: st.out.note(f"[dim]{escape(message)}[/]"), keep=keep,
    )

    def render(console: Console) -> None:
        console.print(f"PostgreSQL {report.server_version}; tv_post over {report.scale.posts} posts; "
                      f"{report.rounds} rounds x {report.iterations} single-row writes per variant")
        table = Table("variant", "median", "p95", *(["throughput"] if report.clients else []))
        for r in report.results.values():
            cells = [f"{r.median_ms:.3f} ms", f"{r.p95_ms:.3f} ms"]
            if report.clients:
                cells.append(f"{r.throughput:,.0f} tx/s ({report.clients} clients)")
            table.add_row(r.variant, *cells)
        console.print(table)
        console.print(f"refresh-event insert: {report.latency_overhead_ms * 1000:+.1f} µs per write (median)"
                      + (f", {report.throughput_change * 100:+.1f}% concurrent throughput"
                         if report.throughput_change is not None else ""))
        console.print(f"rollup of {report.events_rolled_up:,} events: {report.rollup_ms:.1f} ms")

    st.out.emit(report, render)


# -- verify ---------------------------------------------------------------------------------------------------


def verify_table(drifts: list[verify_mod.Drift]) -> Table:
    table = Table("TVIEW", "rows", "missing", "extra", "different", "result")
    for d in drifts:
        cells = []
        for kind in verify_mod.KINDS:
            n = d.counts[kind]
            shown = ", ".join(map(str, d.examples[kind])) + (", …" if n > len(d.examples[kind]) else "")
            cells.append(Text(f"{n} ({shown})" if n else "0", style="red" if n else ""))
        if d.remaining is not None and d.drifted:
            result = Text(f"repaired ({d.repaired_rows} rows), {d.remaining} left",
                          style="green" if d.remaining == 0 else "bold red")
        elif d.drifted:
            result = Text("drifted", style="bold red")
        else:
            result = Text("exact", style="green")
        if d.pending:
            result += Text(f"; {d.pending} queued changes pending", style="yellow")
        table.add_row(Text(d.tview), f"{d.rows:,}", *cells, result)
    return table


@app.command("verify")
def verify(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only this TVIEW (default: every TVIEW)")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Recompute the drifted rows")] = False,
    chunk: Annotated[int, typer.Option("--chunk", help="Table rows compared per step")] = verify_mod.DEFAULT_CHUNK,
    examples: Annotated[int, typer.Option("--examples", help="Keys shown per kind of drift")]
    = verify_mod.DEFAULT_EXAMPLES,
) -> None:
    """Compare TVIEWs with their definitions exactly (missing, extra, different keys); exit 1 on drift."""
    st = state(ctx)
    with st.connect() as conn, VerifyProgress(st) as on_progress:
        drifts = verify_mod.verify(conn, name, repair=repair, chunk=chunk, examples=examples, progress=on_progress)
    st.out.emit([d.as_dict() for d in drifts],
                lambda console: console.print(verify_table(drifts) if drifts else "no TVIEWs"))
    verify_mod.require_exact(drifts)


class VerifyProgress:
    """A rich progress bar per TVIEW (on stderr, for people), shown once a TVIEW spans several chunks."""

    def __init__(self, st: State) -> None:
        self.enabled = not st.out.json
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=st.out.err, transient=True)
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> verify_mod.Progress:
        if self.enabled:
            self.bar.start()
        return self.update

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.stop()

    def update(self, tview: str, done: int, total: int) -> None:
        if not self.enabled or (tview not in self.tasks and done >= total):
            return  # done in one chunk: no bar
        if tview not in self.tasks:
            self.tasks[tview] = self.bar.add_task(f"verifying {escape(tview)}", total=total)
        self.bar.update(self.tasks[tview], completed=done)


# -- doctor ---------------------------------------------------------------------------------------------------


def doctor_table(findings: list[doctor_mod.Finding]) -> Table:
    table = Table("check", "TVIEW", "problem", "fix")
    for f in findings:
        table.add_row(f.check, Text(f.tview or "(database)"), Text(f.problem, style="red"), Text(f.fix))
    return table


@app.command("doctor")
def doctor(
    ctx: typer.Context,
    repair: Annotated[bool, typer.Option("--repair", help="Fix what can be fixed, in one transaction")] = False,
) -> None:
    """Find drift between the catalog and the installed objects (triggers, functions, views, tables, renamed
    sources, the DDL guard); with --repair rebuild them and recompute differing rows; exit 1 if problems remain."""
    st = state(ctx)
    with st.connect() as conn:
        report = doctor_mod.doctor(conn, repair=repair)

    def render(console: Console) -> None:
        if report.findings:
            console.print(doctor_table(report.findings))
        for action in report.actions:
            console.print(Text(f"repaired: {action}", style="green"))
        if report.repaired and report.remaining:
            console.print(Text("still wrong after the repair:", style="bold red"))
            console.print(doctor_table(report.remaining))
        if report.ok:
            console.print(Text("catalog and installed objects agree" if not report.findings
                               else "every problem was repaired", style="green"))

    st.out.emit(report.as_dict(), render)
    doctor_mod.require_healthy(report)
