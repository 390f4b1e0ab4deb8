"""The dependency graph: source tables → TVIEWs → TVIEWs that read them, with refresh modes.

Read from the catalog (tviews.entity, tviews.entity_source) and written as Mermaid or Graphviz
DOT text; SVG and PNG are rendered by Graphviz's `dot` program.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass, field

import psycopg

from .. import catalog, engine
from ..errors import UsageError

FORMATS = ("mermaid", "dot", "svg", "png")

#: fill colours by node kind (tables) and refresh mode (TVIEWs), shared by both text formats
COLOURS = {
    "table": ("#eef2fb", "#5b6b8c"),
    "immediate": ("#e3f6e3", "#3d8b3d"),
    "deferred": ("#fdf6d8", "#9a8420"),
    "async": ("#fbe6e6", "#a34646"),
}


@dataclass(frozen=True)
class Node:
    name: str  # schema.table
    kind: str  # table or tview
    mode: str | None = None  # refresh mode of a TVIEW

    @property
    def style(self) -> str:
        return self.mode or "table"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"nodes": [asdict(n) for n in self.nodes], "edges": [asdict(e) for e in self.edges]}

    def around(self, name: str) -> Graph:
        """The part of the graph `name` reads from (transitively) and the TVIEWs that read it."""
        keep = {name}
        for forward in (True, False):
            frontier = [name]
            while frontier:
                current = frontier.pop()
                for edge in self.edges:
                    near, far = (edge.target, edge.source) if forward else (edge.source, edge.target)
                    if near == current and far not in keep:
                        keep.add(far)
                        frontier.append(far)
        return Graph([n for n in self.nodes if n.name in keep],
                     [e for e in self.edges if e.source in keep and e.target in keep])


def load(conn: psycopg.Connection, name: str | None = None) -> Graph:
    """The graph of every TVIEW of the database, or only of what is connected to TVIEW `name`."""
    catalog.require(conn)
    graph = Graph()
    tviews = conn.execute(
        "SELECT schema_name || '.' || table_name, mode FROM tviews.entity ORDER BY rank, schema_name, table_name"
    ).fetchall()
    tview_names = {n for n, _mode in tviews}
    sources = conn.execute(
        "SELECT s.schema_name || '.' || s.table_name, e.schema_name || '.' || e.table_name"
        "  FROM tviews.entity_source s JOIN tviews.entity e ON e.id = s.entity_id"
        " ORDER BY e.rank, e.schema_name, e.table_name, s.position"
    ).fetchall()
    tables = sorted({source for source, _target in sources if source not in tview_names})
    graph.nodes = [Node(t, "table") for t in tables] + [Node(n, "tview", mode) for n, mode in tviews]
    graph.edges = [Edge(source, target) for source, target in sources]
    if name is not None:
        return graph.around(engine.get(conn, name).name)
    return graph


# -- Mermaid -----------------------------------------------------------------------------------------


def _mermaid_label(text: str) -> str:
    """Text safe inside a quoted Mermaid label (entity codes for the characters it would parse)."""
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("\n", " ")):
        text = text.replace(char, code)
    return text


def to_mermaid(graph: Graph) -> str:
    """A Mermaid flowchart: tables as cylinders, TVIEWs as rounded boxes coloured by mode."""
    ids = {node.name: f"n{i}" for i, node in enumerate(graph.nodes, start=1)}
    lines = ["flowchart LR"]
    for style in sorted({n.style for n in graph.nodes}):
        fill, stroke = COLOURS[style]
        lines.append(f"    classDef {style} fill:{fill},stroke:{stroke},color:#222")
    for node in graph.nodes:
        label = _mermaid_label(node.name)
        if node.kind == "table":
            lines.append(f'    {ids[node.name]}[("{label}")]')
        else:
            lines.append(f'    {ids[node.name]}("{label}<br/><i>{node.mode}</i>")')
    for edge in graph.edges:
        lines.append(f"    {ids[edge.source]} --> {ids[edge.target]}")
    for style in sorted({n.style for n in graph.nodes}):
        members = ",".join(ids[n.name] for n in graph.nodes if n.style == style)
        lines.append(f"    class {members} {style}")
    return "\n".join(lines) + "\n"


# -- Graphviz ----------------------------------------------------------------------------------------


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: Graph) -> str:
    """A Graphviz digraph, left to right: tables as cylinders, TVIEWs as boxes coloured by mode."""
    ids = {node.name: f"n{i}" for i, node in enumerate(graph.nodes, start=1)}
    lines = [
        "digraph pg_tviews {",
        "    rankdir=LR;",
        '    node [fontname="Helvetica", fontsize=11];',
        '    edge [color="#777777"];',
    ]
    for node in graph.nodes:
        fill, stroke = COLOURS[node.style]
        if node.kind == "table":
            shape, style, label = "cylinder", "filled", node.name
        else:
            shape, style, label = "box", "rounded,filled", f"{node.name}\n{node.mode}"
        lines.append(f'    {ids[node.name]} [shape={shape}, style="{style}", label={_dot_string(label)},'
                     f' fillcolor="{fill}", color="{stroke}"];')
    for edge in graph.edges:
        lines.append(f"    {ids[edge.source]} -> {ids[edge.target]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(graph: Graph, fmt: str) -> bytes:
    """The graph in `fmt`: Mermaid or DOT text (UTF-8), or SVG / PNG drawn by Graphviz."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown graph format {fmt!r}", hint=f"choose one of: {', '.join(FORMATS)}")
    if fmt == "mermaid":
        return to_mermaid(graph).encode()
    if fmt == "dot":
        return to_dot(graph).encode()
    dot = shutil.which("dot")
    if dot is None:
        raise UsageError(
            f"rendering {fmt.upper()} needs Graphviz's `dot` program, which is not installed",
            hint="install Graphviz (e.g. apt-get install graphviz), or use --format dot or --format mermaid",
        )
    result = subprocess.run([dot, f"-T{fmt}"], input=to_dot(graph).encode(), capture_output=True, timeout=120)
    if result.returncode != 0:
        raise UsageError(f"dot -T{fmt} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout
