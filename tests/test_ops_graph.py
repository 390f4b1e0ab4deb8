"""`pg-tviews graph`: the dependency graph as Mermaid, DOT, SVG and PNG."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
from psycopg import sql

import workload
from pg_tviews import engine
from pg_tviews.ops import graph
from test_ops_health import cli

NODE = re.compile(r'^(?P<id>[A-Za-z][A-Za-z0-9_]*)(?P<open>\[\(|\()"(?P<label>[^"]*)"(?P<close>\)\]|\))$')
EDGE = re.compile(r"^(?P<a>[A-Za-z][A-Za-z0-9_]*) --> (?P<b>[A-Za-z][A-Za-z0-9_]*)$")
CLASSDEF = re.compile(r"^classDef (?P<name>[A-Za-z][A-Za-z0-9_-]*) (?P<styles>[a-z-]+:[^,\s]+(,[a-z-]+:[^,\s]+)*)$")
CLASS = re.compile(r"^class (?P<ids>[A-Za-z][A-Za-z0-9_]*(,[A-Za-z][A-Za-z0-9_]*)*) (?P<name>[A-Za-z][A-Za-z0-9_-]*)$")
ENTITIES = {"#quot;": '"', "#lt;": "<", "#gt;": ">", "#35;": "#"}


def parse_mermaid(text: str) -> tuple[dict[str, str], list[tuple[str, str]], dict[str, str]]:
    """Check a Mermaid flowchart line by line against the grammar subset the generator uses.

    Returns labels by node id (entities decoded), edges, and the class of each node. Raises
    AssertionError on any line that is not a header, classDef, node, edge or class statement, on
    duplicate or undeclared ids, unbalanced shapes and undefined classes.
    """
    lines = [line.strip() for line in text.strip().splitlines()]
    assert re.fullmatch(r"flowchart (LR|RL|TB|TD|BT)", lines[0]), lines[0]
    labels: dict[str, str] = {}
    edges: list[tuple[str, str]] = []
    classdefs: set[str] = set()
    classes: dict[str, str] = {}
    for line in lines[1:]:
        if m := CLASSDEF.match(line):
            classdefs.add(m["name"])
        elif m := NODE.match(line):
            assert (m["open"], m["close"]) in (("[(", ")]"), ("(", ")")), line
            assert m["id"] not in labels, f"duplicate node {m['id']}"
            label = m["label"]
            for code, char in ENTITIES.items():
                label = label.replace(code, char)
            labels[m["id"]] = label
        elif m := EDGE.match(line):
            edges.append((m["a"], m["b"]))
        elif m := CLASS.match(line):
            assert m["name"] in classdefs, f"class {m['name']} used before classDef"
            for node in m["ids"].split(","):
                classes[node] = m["name"]
        else:
            raise AssertionError(f"not a flowchart statement: {line!r}")
    for a, b in edges:
        assert a in labels and b in labels, f"edge {a} --> {b} names an undeclared node"
    assert set(classes) <= set(labels)
    return labels, edges, classes


def named_edges(labels: dict[str, str], edges: list[tuple[str, str]]) -> set[tuple[str, str]]:
    first_line = {node: label.split("<br/>")[0] for node, label in labels.items()}
    return {(first_line[a], first_line[b]) for a, b in edges}


WORKLOAD_EDGES = {
    ("public.tb_post", "public.tv_post"), ("public.tb_user", "public.tv_post"), ("public.tb_like", "public.tv_post"),
    ("public.tb_comment", "public.tv_post"), ("public.tb_user", "public.tv_user"),
    ("public.tb_post", "public.tv_user"), ("public.tb_comment", "public.tv_user"),
    ("public.tv_post", "public.tv_feed"), ("public.tv_user", "public.tv_feed"),
}


def test_graph_of_a_cascade(pg, tvconn):
    workload.setup(tvconn, "immediate")
    engine.alter(tvconn, "tv_user", mode="deferred")
    loaded = graph.load(tvconn)
    kinds = {n.name: (n.kind, n.mode) for n in loaded.nodes}
    assert kinds["public.tv_feed"] == ("tview", "immediate") and kinds["public.tv_user"] == ("tview", "deferred")
    assert kinds["public.tb_like"] == ("table", None)
    assert {(e.source, e.target) for e in loaded.edges} == WORKLOAD_EDGES

    labels, edges, classes = parse_mermaid(graph.to_mermaid(loaded))
    assert named_edges(labels, edges) == WORKLOAD_EDGES
    by_label = {label.split("<br/>")[0]: node for node, label in labels.items()}
    assert classes[by_label["public.tv_user"]] == "deferred" and classes[by_label["public.tb_post"]] == "table"

    around = graph.load(tvconn, "tv_post")  # what tv_post reads, and what reads it
    names = {n.name for n in around.nodes}
    assert names == {"public.tv_post", "public.tv_feed", "public.tb_post", "public.tb_user", "public.tb_like",
                     "public.tb_comment"}
    assert ("public.tv_user", "public.tv_feed") not in {(e.source, e.target) for e in around.edges}


def dot_canon(text: bytes) -> str:
    result = subprocess.run(["dot", "-Tcanon"], input=text, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed (.ci/run installs it)")
def test_dot_svg_and_png_render(pg, tvconn, tmp_path, capsys):
    workload.setup(tvconn)
    loaded = graph.load(tvconn)
    canon = dot_canon(graph.render(loaded, "dot"))
    assert canon.count("->") == len(WORKLOAD_EDGES) and 'label="public.tv_feed\\nimmediate"' in canon

    svg = ET.fromstring(graph.render(loaded, "svg"))
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    texts = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")}
    assert {"public.tv_feed", "public.tb_like", "immediate"} <= texts

    dsn = tvconn.info.dsn
    for fmt, magic in (("png", b"\x89PNG\r\n\x1a\n"), ("svg", b"<?xml")):
        target = tmp_path / f"graph.{fmt}"
        code, out, err = cli(capsys, "--dsn", dsn, "graph", "--format", fmt, "-o", str(target))
        assert code == 0, err
        assert target.read_bytes().startswith(magic) and f"wrote {target}" in out

    code, out, err = cli(capsys, "--dsn", dsn, "graph", "-f", "dot")
    assert code == 0, err
    dot_canon(out.encode())
    code, out, err = cli(capsys, "--dsn", dsn, "graph")  # mermaid by default
    assert code == 0 and named_edges(*parse_mermaid(out)[:2]) == WORKLOAD_EDGES


@pytest.mark.majors("newest")
def test_odd_names_are_escaped(pg, tvconn):
    schema = sql.Identifier('we"ird \\ #1')
    tvconn.execute(sql.SQL("CREATE SCHEMA {s}; CREATE TABLE {s}.{t} (pk_a bigint PRIMARY KEY, v text)").format(
        s=schema, t=sql.Identifier("tb <a>")))
    engine.create(tvconn, sql.Identifier('we"ird \\ #1', 'tv "a" <b>').as_string(tvconn),
                  sql.SQL("SELECT a.pk_a, a.v FROM {}.{} a").format(schema, sql.Identifier("tb <a>")).as_string(tvconn))
    loaded = graph.load(tvconn)
    labels, edges, _classes = parse_mermaid(graph.to_mermaid(loaded))
    assert named_edges(labels, edges) == {('we"ird \\ #1.tb <a>', 'we"ird \\ #1.tv "a" <b>')}
    if shutil.which("dot"):
        canon = dot_canon(graph.to_dot(loaded).encode())
        assert canon.count("->") == 1 and 'we\\"ird' in canon


@pytest.mark.majors("newest")
def test_bad_format_and_unknown_tview(pg, tvconn, capsys):
    workload.setup(tvconn)
    assert cli(capsys, "--dsn", tvconn.info.dsn, "graph", "--format", "gif")[0] == 2
    assert cli(capsys, "--dsn", tvconn.info.dsn, "graph", "tv_nope")[0] == 2
