"""A catalog fingerprint: everything about schema tviews that an upgrade must get exactly right.

Tables (columns with attnum, type, not-null, default, identity), constraints, indexes, functions
(signature, kind, volatility, security, owner, settings, body), views, triggers, event triggers
(the DDL guard), types, sequences, comments, ACLs, and in extension mode the tables marked for
pg_dump. Objects generated for individual TVIEWs (tv<id>_*) are user data, not catalog, and are
left out. Two databases whose fingerprints are equal have the same catalog, however they got
there (fresh install, upgrade, downgrade, dump and restore), which is how every migration of the
chain is proven.
"""

from __future__ import annotations

import psycopg

SCHEMA = "tviews"
GENERATED = r"^tv[0-9]+_"

_QUERIES = {
    "relations": """
        SELECT c.relname, c.relkind, c.relpersistence, pg_catalog.pg_get_userbyid(c.relowner),
               coalesce(c.relacl::text, ''), coalesce(pg_catalog.obj_description(c.oid, 'pg_class'), '')
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'tviews'::regnamespace AND c.relname !~ %(generated)s
           AND c.relkind IN ('r', 'v', 'S', 'p', 'm')
         ORDER BY 1""",
    "columns": """
        SELECT c.relname, a.attnum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
               a.attidentity, coalesce(pg_catalog.pg_get_expr(d.adbin, d.adrelid), '')
          FROM pg_catalog.pg_attribute a
          JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'tviews'::regnamespace AND c.relname !~ %(generated)s
           AND c.relkind IN ('r', 'v', 'p', 'c') AND a.attnum > 0
         ORDER BY 1, 2""",
    "dropped_columns": """
        SELECT c.relname, count(*) FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
         WHERE c.relnamespace = 'tviews'::regnamespace AND a.attisdropped GROUP BY 1 ORDER BY 1""",
    "constraints": """
        SELECT c.relname, k.conname, k.contype, pg_catalog.pg_get_constraintdef(k.oid)
          FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
         WHERE c.relnamespace = 'tviews'::regnamespace AND c.relname !~ %(generated)s
         ORDER BY 1, 2""",
    "indexes": """
        SELECT t.relname, i.relname, pg_catalog.pg_get_indexdef(i.oid)
          FROM pg_catalog.pg_index x
          JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
          JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
         WHERE t.relnamespace = 'tviews'::regnamespace AND t.relname !~ %(generated)s
         ORDER BY 1, 2""",
    "functions": """
        SELECT p.oid::regprocedure::text, p.prokind, p.provolatile, p.prosecdef, p.proleakproof, p.proisstrict,
               pg_catalog.pg_get_userbyid(p.proowner), coalesce(p.proconfig::text, ''),
               pg_catalog.format_type(p.prorettype, NULL), l.lanname, md5(p.prosrc),
               coalesce(p.proacl::text, ''), coalesce(pg_catalog.obj_description(p.oid, 'pg_proc'), '')
          FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
         WHERE p.pronamespace = 'tviews'::regnamespace AND p.proname !~ %(generated)s
         ORDER BY 1""",
    "views": """
        SELECT c.relname, pg_catalog.pg_get_viewdef(c.oid)
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'tviews'::regnamespace AND c.relkind = 'v' AND c.relname !~ %(generated)s
         ORDER BY 1""",
    "triggers": """
        SELECT c.relname, t.tgname, pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled
          FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = 'tviews'::regnamespace AND NOT t.tgisinternal
         ORDER BY 1, 2""",
    "types": """
        SELECT t.typname, t.typtype FROM pg_catalog.pg_type t
         WHERE t.typnamespace = 'tviews'::regnamespace AND t.typtype IN ('c', 'd', 'e')
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
         ORDER BY 1""",
    "schema": """
        SELECT n.nspname, pg_catalog.pg_get_userbyid(n.nspowner), coalesce(n.nspacl::text, ''),
               coalesce(pg_catalog.obj_description(n.oid, 'pg_namespace'), '')
          FROM pg_catalog.pg_namespace n WHERE n.nspname = 'tviews'""",
    "event_triggers": """
        SELECT e.evtname, e.evtevent, e.evtfoid::regprocedure::text, e.evtenabled, coalesce(e.evttags::text, ''),
               pg_catalog.pg_get_userbyid(e.evtowner)
          FROM pg_catalog.pg_event_trigger e JOIN pg_catalog.pg_proc p ON p.oid = e.evtfoid
         WHERE p.pronamespace = 'tviews'::regnamespace
         ORDER BY 1""",
    "extension_config": """
        SELECT array_agg(c.relname ORDER BY c.relname)
          FROM pg_catalog.pg_extension e, unnest(e.extconfig) cfg(oid) JOIN pg_catalog.pg_class c ON c.oid = cfg.oid
         WHERE e.extname = 'pg_tviews'""",
}


def fingerprint(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    """The catalog fingerprint of the connected database (see the module notes).

    Definitions are read with search_path = pg_catalog, so that names in them come out qualified
    the same way whatever the session's search_path is.
    """
    saved = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()[0]
    conn.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog', false)")
    try:
        return {
            name: [tuple(_hashable(v) for v in row) for row in conn.execute(query, {"generated": GENERATED}).fetchall()]
            for name, query in _QUERIES.items()
        }
    finally:
        if not conn.broken and conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            conn.execute("SELECT pg_catalog.set_config('search_path', %s, false)", (saved,))


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def differences(a: dict[str, list[tuple]], b: dict[str, list[tuple]], *, ignore: tuple[str, ...] = ()) -> list[str]:
    """Human-readable differences between two fingerprints (empty when equal)."""
    found = []
    for section in a:
        if section in ignore:
            continue
        left, right = set(a[section]), set(b.get(section, []))
        for row in sorted(left - right, key=str):
            found.append(f"{section}: only in first: {row}")
        for row in sorted(right - left, key=str):
            found.append(f"{section}: only in second: {row}")
    return found
