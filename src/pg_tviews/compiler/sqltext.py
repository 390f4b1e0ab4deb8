"""Quoting for generated SQL: identifiers always quoted, literals always escaped, by construction."""

from __future__ import annotations

from psycopg import sql


def ident(*parts: str) -> str:
    """A (qualified) identifier, always double-quoted: safe for any name."""
    return sql.Identifier(*parts).as_string()


def literal(value: object) -> str:
    return sql.Literal(value).as_string()


def column_list(columns: list[str], prefix: str = "") -> str:
    """`p."a", p."b"` (or `"a", "b"` without prefix)."""
    dot = f"{prefix}." if prefix else ""
    return ", ".join(f"{dot}{ident(c)}" for c in columns)


def row(columns: list[str], prefix: str = "") -> str:
    """A row constructor usable with IS DISTINCT FROM and multi-column SET, even for one column."""
    return f"ROW({column_list(columns, prefix)})"
