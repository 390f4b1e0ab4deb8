"""Catalog lookups the analyzer needs: what a name in the definition refers to."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from .model import Column, Relation

_RELKINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table"}


@dataclass
class Found:
    """A relation name resolved in the catalog: a base relation, or a view with its SQL."""

    relation: Relation | None
    view_sql: str | None
    kind: str
    persistence: str


class RelationLookup:
    """Resolves relation names like PostgreSQL does (search_path), with a per-analysis cache."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self._cache: dict[tuple[str | None, str], Found | None] = {}
        self._has_catalog = conn.execute("SELECT to_regclass('tviews.entity') IS NOT NULL").fetchone()[0]

    def find(self, schema: str | None, name: str) -> Found | None:
        key = (schema, name)
        if key not in self._cache:
            self._cache[key] = self._find(schema, name)
        return self._cache[key]

    def _find(self, schema: str | None, name: str) -> Found | None:
        qualified = sql.Identifier(schema, name) if schema else sql.Identifier(name)
        row = self.conn.execute(
            "SELECT c.oid, n.nspname, c.relname, c.relkind, c.relpersistence"
            " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = to_regclass(%s)",
            (qualified.as_string(self.conn),),
        ).fetchone()
        if row is None:
            return None
        oid, nspname, relname, relkind, persistence = row
        kind = _RELKINDS.get(relkind, f"relation of kind {relkind!r}")
        if relkind == "v":
            view_sql = self.conn.execute("SELECT pg_catalog.pg_get_viewdef(%s::oid)", (oid,)).fetchone()[0]
            return Found(None, view_sql.strip().rstrip(";"), kind, persistence)
        if relkind not in ("r", "p"):
            return Found(None, None, kind, persistence)
        columns = {
            name: Column(name, typ, notnull)
            for name, typ, notnull in self.conn.execute(
                "SELECT attname, pg_catalog.format_type(atttypid, atttypmod), attnotnull"
                " FROM pg_catalog.pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped"
                " ORDER BY attnum",
                (oid,),
            ).fetchall()
        }
        primary_key = None
        unique: list[tuple[str, ...]] = []
        for is_primary, cols in self.conn.execute(
            "SELECT i.indisprimary, ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, pos)"
            "   JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.pos)"
            " FROM pg_catalog.pg_index i WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid"
            "   AND i.indpred IS NULL AND i.indexprs IS NULL"
            " ORDER BY NOT i.indisprimary, i.indnatts, i.indexrelid",
            (oid,),
        ).fetchall():
            cols = tuple(cols)
            if is_primary:
                primary_key = cols
            if all(columns[c].not_null for c in cols if c in columns):
                unique.append(cols)
        tview_id = None
        if self._has_catalog:
            found = self.conn.execute(
                "SELECT id FROM tviews.entity WHERE schema_name = %s AND table_name = %s", (nspname, relname)
            ).fetchone()
            tview_id = found[0] if found else None
        relation = Relation(nspname, relname, kind, columns, primary_key, unique, tview_id)
        return Found(relation, None, kind, persistence)
