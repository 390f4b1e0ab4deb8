"""`pg-tviews bench`: write latency of read-model implementations, side by side."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .. import bench
from ..bench import concurrency
from ..bench.contenders import HANDWRITTEN, MATVIEW, PLAIN, tviews_contender
from . import app, state


@app.command("bench")
def bench_cmd(
    ctx: typer.Context,
    scale: Annotated[float, typer.Option("--scale", help="1 = 10k users, 100k posts, 500k comments")] = 1.0,
    iterations: Annotated[int, typer.Option("--iterations", help="Single-row writes per operation")] = 300,
    bulk_iterations: Annotated[int, typer.Option("--bulk-iterations", help="Bulk writes per operation")] = 20,
    matview_iterations: Annotated[int, typer.Option("--matview-iterations",
                                                    help="Writes + REFRESH MATERIALIZED VIEW per operation")] = 3,
    modes: Annotated[str, typer.Option("--modes", help="pg_tviews modes to measure, comma separated")] = "immediate",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the write sequence")] = 42,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the benchmark databases")] = False,
) -> None:
    """Benchmark writes: no read model, hand-written triggers, pg_tviews, REFRESH MATERIALIZED VIEW."""
    st = state(ctx)
    contenders = [PLAIN, HANDWRITTEN, *(tviews_contender(m.strip()) for m in modes.split(",")), MATVIEW]
    progress = st.out.note if not st.out.json else (lambda message: None)
    report = bench.run(
        st.target().dsn,
        scale=bench.Scale.scaled(scale),
        iterations=iterations,
        bulk_iterations=bulk_iterations,
        matview_iterations=matview_iterations,
        contenders=contenders,
        seed=seed,
        progress=lambda message: progress(f"[dim]{message}[/]"),
        keep=keep,
    )
    names = [c.name for c in contenders]
    main = contenders[2].name

    def render(console: Console) -> None:
        s = report.scale
        console.print(f"PostgreSQL {report.server_version}; {s.users} users, {s.posts} posts, {s.comments} comments;"
                      " median / p95 in ms per write (one transaction each)")
        table = Table("operation", *names, f"{main} / handwritten", f"{main} / plain", f"matview / {main}")
        for operation in bench.OPERATIONS:
            cells = []
            for name in names:
                m = report.get(operation.name, name)
                cells.append(f"{m.median_ms:.3f} / {m.p95_ms:.3f}" if m else "-")
            ratios = [report.ratio(operation.name, main, "handwritten"), report.ratio(operation.name, main, "plain"),
                      report.ratio(operation.name, "matview", main)]
            table.add_row(operation.name, *cells, *(f"{r:.2f}x" if r is not None else "-" for r in ratios))
        console.print(table)

    st.out.emit(report, render)


@app.command("bench-concurrency")
def bench_concurrency_cmd(
    ctx: typer.Context,
    scale: Annotated[float, typer.Option("--scale", help="1 = 10k users, 100k posts, 500k comments")] = 1.0,
    clients: Annotated[int, typer.Option("--clients", help="Concurrent writers (pgbench clients)")] = 8,
    duration: Annotated[int, typer.Option("--duration", help="Seconds per workload and contender")] = 10,
    hot: Annotated[int, typer.Option("--hot", help="Users the mixed workload concentrates on")] = 50,
    workloads: Annotated[str, typer.Option("--workloads", help="Comma separated: " + ", ".join(
        concurrency.WORKLOADS))] = ",".join(concurrency.WORKLOADS),
    modes: Annotated[str, typer.Option("--modes", help="pg_tviews modes to measure")] = "immediate,deferred,async",
    keep: Annotated[bool, typer.Option("--keep", help="Keep the benchmark databases")] = False,
) -> None:
    """Benchmark concurrent writers (pgbench): TPS per read model, latency, and exactness after the run."""
    st = state(ctx)
    contenders = [PLAIN, HANDWRITTEN, *(tviews_contender(m.strip()) for m in modes.split(","))]
    progress = st.out.note if not st.out.json else (lambda message: None)
    report = concurrency.run(
        st.target().dsn, scale=bench.Scale.scaled(scale), clients=clients, duration=duration, hot=hot,
        workloads=[w.strip() for w in workloads.split(",")], contenders=contenders,
        progress=lambda message: progress(f"[dim]{message}[/]"), keep=keep)

    def render(console: Console) -> None:
        s = report.scale
        console.print(f"PostgreSQL {report.server_version}; {s.users} users, {s.posts} posts, {s.comments} comments;"
                      f" {report.clients} clients x {report.duration_s} s per cell; synchronous_commit off")
        table = Table("workload", "contender", "TPS", "vs handwritten", "vs plain", "median / p99 / max ms",
                      "retried", "exact after")
        for run in report.runs:
            vs_hw = report.ratio(run.workload, run.contender, HANDWRITTEN.name)
            vs_plain = report.ratio(run.workload, run.contender, PLAIN.name)
            exact = ("-" if run.drifted_rows is None else
                     "yes" if run.drifted_rows == 0 else f"[red]no: {run.drifted_rows} rows stale[/]")
            if run.backlog_after:
                exact += f" (backlog {run.backlog_after} drained in {run.drain_s:.1f} s)"
            table.add_row(run.workload, run.contender, f"{run.tps:,.0f}",
                          f"{vs_hw:.0%}" if vs_hw is not None else "-", f"{vs_plain:.0%}" if vs_plain is not None else "-",
                          f"{run.latency_median_ms:.2f} / {run.latency_p99_ms:.2f} / {run.latency_max_ms:.1f}",
                          str(run.retried), exact)
        console.print(table)

    st.out.emit(report, render)
