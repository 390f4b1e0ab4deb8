"""`pg-tviews apply FILE.sql ...`: schema files with the familiar `CREATE TABLE tv_x AS SELECT ...`.

Files are split into statements with PostgreSQL's own parser and run in one transaction. Every
`CREATE TABLE tv_<name> AS SELECT ...` becomes a TVIEW (options may be given as storage
parameters: `WITH (pg_tviews.key = 'pk_x', pg_tviews.mode = 'deferred')`); every other statement
runs as written. A dry run executes everything and rolls back, reporting what would happen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from pglast import ast, parse_sql
from pglast.parser import ParseError, scan

from . import engine
from .definition.positions import char_offset, line_col
from .errors import DefinitionError, TViewError, UsageError

TVIEW_PREFIX = "tv_"
OPTIONS = ("key", "mode")


@dataclass
class Step:
    file: str
    line: int
    action: str  # "sql" or "tview"
    summary: str
    tview: dict | None = None


@dataclass
class ApplyResult:
    files: list[str]
    dry_run: bool
    steps: list[Step] = field(default_factory=list)

    @property
    def tviews(self) -> list[dict]:
        return [s.tview for s in self.steps if s.tview]


class _Rollback(Exception):
    """Raised inside the transaction to undo a dry run."""


def _option_value(node) -> str:
    if isinstance(node, ast.String):
        return node.sval
    if isinstance(node, ast.TypeName):
        return ".".join(n.sval for n in node.names)
    if isinstance(node, (ast.Integer, ast.Float)):
        return str(getattr(node, "ival", None) or getattr(node, "fval", ""))
    raise UsageError(f"unsupported option value {node!r}")


def _select_offset(statement: str) -> int:
    """Character offset of the query of a CREATE TABLE ... AS statement."""
    tokens = scan(statement)
    for index, token in enumerate(tokens):
        if token.name == "AS" and index + 1 < len(tokens) and tokens[index + 1].name in ("SELECT", "WITH", "ASCII_40"):
            return char_offset(statement, tokens[index + 1].start)
    raise UsageError("cannot find the SELECT of CREATE TABLE ... AS")


def plan_file(path: Path) -> list[tuple[int, str, ast.Node]]:
    """(character offset, statement text, parse tree) of each statement in a file."""
    text = path.read_text()
    try:
        statements = parse_sql(text)
    except ParseError as exc:
        location = exc.args[1] - 1 if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        line, column = line_col(text, location)
        raise DefinitionError(f"syntax error: {exc.args[0]}", obj=str(path), line=line, column=column,
                              hint="fix the SQL file") from None
    planned = []
    for raw in statements:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(text)
        planned.append((start, text[start:end], raw.stmt))
    return planned


def apply_files(conn: psycopg.Connection, paths: list[str | Path], *, dry_run: bool = False) -> ApplyResult:
    """Run SQL files in one transaction, turning `CREATE TABLE tv_* AS SELECT` into TVIEWs."""
    result = ApplyResult([str(p) for p in paths], dry_run)
    files = []
    for path in map(Path, paths):
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        files.append((path, path.read_text(), plan_file(path)))
    try:
        with conn.transaction():
            for path, text, statements in files:
                for offset, statement, node in statements:
                    line = line_col(text, offset)[0]
                    if isinstance(node, ast.CreateTableAsStmt) and node.into.rel.relname.startswith(TVIEW_PREFIX):
                        result.steps.append(_create_tview(conn, path, text, offset, statement, node, line))
                    else:
                        try:
                            conn.execute(statement)
                        except psycopg.Error as exc:
                            raise TViewError(
                                f"{path}:{line}: {str(exc).strip().splitlines()[0]}",
                                hint="nothing was applied: the files run in one transaction",
                            ) from None
                        result.steps.append(Step(str(path), line, "sql", " ".join(statement.split())[:80]))
            if dry_run:
                raise _Rollback
    except _Rollback:
        pass
    return result


def _create_tview(conn, path: Path, text: str, offset: int, statement: str, node, line: int) -> Step:
    rel = node.into.rel
    parts = [rel.schemaname, rel.relname] if rel.schemaname else [rel.relname]
    name = sql.Identifier(*parts).as_string(conn)
    options = {}
    for option in node.into.options or ():
        if option.defnamespace != "pg_tviews" or option.defname not in OPTIONS:
            raise UsageError(f"{path}:{line}: unknown option {option.defnamespace or ''}.{option.defname}",
                             hint=f"supported: {', '.join('pg_tviews.' + o for o in OPTIONS)}")
        options[option.defname] = _option_value(option.arg)
    select_at = _select_offset(statement)
    definition = statement[select_at:]
    try:
        tview = engine.create(conn, name, definition, key=options.get("key"), mode=options.get("mode", "immediate"))
    except DefinitionError as exc:
        if exc.line is not None:
            # positions are relative to the definition: make them positions in the file
            def_offset = _offset_of(definition, exc.line, exc.column)
            exc.line, exc.column = line_col(text, offset + select_at + def_offset)
        exc.obj = str(path)
        raise
    return Step(str(path), line, "tview", f"TVIEW {tview.name} (key {tview.key}, {tview.mode})", tview.as_dict())


def _offset_of(text: str, line: int, column: int) -> int:
    lines = text.split("\n")
    return sum(len(x) + 1 for x in lines[: line - 1]) + column - 1
