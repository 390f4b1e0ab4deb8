"""`pg-tviews bench`: write latency of read-model implementations, side by side."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .. import bench
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
