"""Statement-level triggers on the sources of a TVIEW, with transition tables.

PostgreSQL forbids transition tables on triggers with several events or a column list, so each
(TVIEW, source table) gets one trigger per event: INSERT, UPDATE, DELETE and TRUNCATE.

An UPDATE of columns the TVIEW does not read must cost (almost) nothing. A BEFORE ROW "gate"
trigger whose WHEN clause compares the read columns of OLD and NEW (evaluated by the executor, no
function call while they are equal) opens a transaction-local flag on the first row that
changed them; the statement trigger's own WHEN clause runs it only when the flag is open. The
gate is named to sort after ordinary trigger names ("~pg_tviews_..."), so BEFORE triggers of the
application that modify the row run before it compares. The statement trigger then keeps only
rows whose read columns changed (old and new images paired by the source's primary key).

What the trigger does with the affected keys depends on the TVIEW's mode:
* immediate: refresh them now (read-your-writes) and record them for the commit step;
* deferred: record them; the commit step refreshes once per transaction;
* async: queue them for the worker.
"""

from __future__ import annotations

from ..definition import Definition, Relation
from .lineage import entry_values, lineage_id, lineage_select
from .names import Names
from .slots import changed_row_slots, crossing_slots, key_slot
from .sqltext import ident, literal, row

#: longest list of slots kept for one TVIEW in a transaction (characters); beyond, its commit step
#: compares with every commit since its snapshot instead (see slots.py)
SLOT_LIST_LIMIT = 30000

#: statements changing more rows than this plan their change query for their own size (see
#: trigger_function)
REPLAN_ROWS = 100

_EVENT_SQL = {"ins": "INSERT", "upd": "UPDATE", "del": "DELETE", "trunc": "TRUNCATE"}


def changed_rows(definition: Definition, relation: Relation, event: str) -> str:
    """SELECT of the changed rows (both images for UPDATE) relevant to the TVIEW."""
    if event == "ins":
        return "SELECT n.* FROM new_rows n"
    if event == "del":
        return "SELECT o.* FROM old_rows o"
    read = definition.columns_read(relation)
    key = relation.row_key()
    if key is None or not read:
        # rows cannot be paired (no key) or everything is read: every updated row counts
        return "SELECT n.* FROM new_rows n UNION ALL SELECT o.* FROM old_rows o"
    on = " AND ".join(f"{{b}}.{ident(c)} = {{a}}.{ident(c)}" for c in key)
    unmatched = f"{{b}}.{ident(key[0])} IS NULL"
    differ = f"{row(read, 'n')} IS DISTINCT FROM {row(read, 'o')}"
    new_side = f"SELECT n.* FROM new_rows n LEFT JOIN old_rows o ON {on.format(a='n', b='o')} WHERE {unmatched.format(b='o')} OR {differ}"
    old_side = f"SELECT o.* FROM old_rows o LEFT JOIN new_rows n ON {on.format(a='o', b='n')} WHERE {unmatched.format(b='n')} OR {differ}"
    return f"{new_side}\n        UNION ALL\n        {old_side}"


def gate_setting(names: Names, position: int) -> str:
    return f"pg_tviews.g{names.id}_{position}"


def record_block(names: Names, mode: str, rank: int, *, keys: bool, hops: bool, dirty: bool,
                 full: bool, stats: bool, slots: bool = False) -> str:
    """PL/pgSQL recording this statement's changes for the commit step (see the catalog's notes on
    pg_tviews.* settings): arm the step once per transaction, then append to this TVIEW's lists."""
    n = names.id
    entry = f"{rank}:{n}:{mode[0]}"
    lines = [
        "    IF coalesce(current_setting('pg_tviews.xact', true), '') <> pg_current_xact_id()::text THEN",
        "        PERFORM tviews.arm(snap);",
        "    ELSIF snap IS NOT NULL AND current_setting('pg_tviews.snapshot') = '' THEN",
        "        PERFORM set_config('pg_tviews.snapshot', snap::text, true);",
        "    END IF;",
        "    acc := current_setting('pg_tviews.todo');",
        f"    IF strpos(acc, ',{entry},') = 0 THEN",
        f"        PERFORM set_config('pg_tviews.todo', acc || '{entry},', true);",
        "    END IF;",
    ]
    if keys:
        lines += [
            "    IF cardinality(k) > 0 THEN",
            f"        acc := coalesce(current_setting('pg_tviews.k{n}', true), '');",
            "        IF length(acc) > 60000 THEN",
            f"            PERFORM tviews.spill({n}, 'k', acc);",
            "            acc := '';",
            "        END IF;",
            f"        PERFORM set_config('pg_tviews.k{n}', acc || ',' || array_to_string(k, ','), true);",
            "    END IF;",
        ]
    if hops:
        lines += [
            "    IF h IS NOT NULL THEN",
            f"        acc := coalesce(current_setting('pg_tviews.h{n}', true), '');",
            "        IF length(acc) > 60000 THEN",
            f"            PERFORM tviews.spill({n}, 'h', acc);",
            "            acc := '';",
            "        END IF;",
            f"        PERFORM set_config('pg_tviews.h{n}', acc || h::text || E'\\n', true);",
            "    END IF;",
        ]
    if slots:
        lines += [
            "    IF cardinality(l) > 0 THEN",
            f"        acc := coalesce(current_setting('pg_tviews.l{n}', true), '');",
            f"        IF length(acc) > {SLOT_LIST_LIMIT} THEN  -- too many to check one by one: a coarse commit",
            f"            IF strpos(coalesce(current_setting('pg_tviews.x{n}', true), ''), 'c') = 0 THEN",
            f"                PERFORM set_config('pg_tviews.x{n}', coalesce(current_setting('pg_tviews.x{n}', true), '') || 'c', true);",
            "            END IF;",
            "        ELSE",
            f"            PERFORM set_config('pg_tviews.l{n}', acc || ',' || array_to_string(l, ','), true);",
            "        END IF;",
            "    END IF;",
        ]
    if dirty:
        lines += [
            "    IF cardinality(d) > 0 THEN",
            f"        PERFORM set_config('pg_tviews.k{n}', coalesce(current_setting('pg_tviews.k{n}', true), '')"
            " || ',' || array_to_string(d, ','), true);",
            f"        PERFORM set_config('pg_tviews.x{n}', coalesce(current_setting('pg_tviews.x{n}', true), '') || 'd', true);",
            "    END IF;",
        ]
    if full:
        lines.append(f"    PERFORM set_config('pg_tviews.x{n}', coalesce(current_setting('pg_tviews.x{n}', true), '') || 'f', true);")
    if stats:
        lines += [
            f"    acc := coalesce(nullif(current_setting('pg_tviews.s{n}', true), ''), '0 0');",
            f"    PERFORM set_config('pg_tviews.s{n}',",
            "        (split_part(acc, ' ', 1)::bigint + coalesce(r.changed, 0)) || ' ' ||",
            "        (split_part(acc, ' ', 2)::float8 + extract(epoch FROM clock_timestamp() - started) * 1000), true);",
        ]
    return "\n".join(lines) + "\n"


def trigger_function(definition: Definition, names: Names, relation: Relation, position: int, event: str,
                     mode: str, rank: int) -> str:
    fn = names.trigger_function(position, event)
    entity = names.id
    header = f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    started timestamptz := clock_timestamp();
    k bigint[];
    h jsonb;
    snap pg_snapshot;
    r tviews.apply_result;
    d bigint[];
    l integer[];
    acc text;
BEGIN
"""
    footer = "    RETURN NULL;\nEND\n$fn$"
    if event == "trunc":
        if mode == "immediate":
            body = f"""    snap := pg_current_snapshot();
    r := {names.full}();
    IF cardinality(r.contended) > 0 THEN
        d := tviews.contend({entity}, r.contended);
    END IF;
""" + record_block(names, mode, rank, keys=False, hops=False, dirty=True, full=True, stats=True)
        elif mode == "deferred":
            body = record_block(names, mode, rank, keys=False, hops=False, dirty=False, full=True, stats=False)
        else:
            body = f"    PERFORM tviews.enqueue({entity}, NULL, NULL, true);\n"
        return header + body + footer

    lineages = definition.lineages_of(relation)
    # keys computable now: all lineages in immediate mode; without joins otherwise
    now = [lin for lin in lineages if mode == "immediate" or not lin.needs_reevaluation]
    later = [lin for lin in lineages if lin.needs_reevaluation]
    if now:
        union = "\n            UNION ALL ".join(lineage_select(definition, lin, "chg s") for lin in now)
        keys_expr = f"ARRAY(SELECT DISTINCT x.k::bigint FROM (\n            {union}\n        ) x WHERE x.k IS NOT NULL)"
    else:
        keys_expr = "'{}'::bigint[]"
    if later:
        pairs = ", ".join(f"{literal(lineage_id(definition, lin))}, {entry_values(definition, lin, 'chg s')}"
                          for lin in later)
        hops_expr = f"nullif(jsonb_strip_nulls(jsonb_build_object({pairs})), '{{}}')"
    else:
        hops_expr = "NULL::jsonb"
    reset_gate = (f"    PERFORM set_config({literal(gate_setting(names, position))}, '', true);\n"
                  if event == "upd" else "")
    if mode != "async":  # the commit step checks interference by slots (see slots.py)
        selects = changed_row_slots(definition, relation, "chg s")
        if mode == "immediate":  # deferred mode evaluates lineages at commit only
            for lin in lineages:
                selects += crossing_slots(definition, lin, "chg s")
        union = "\n            UNION ALL ".join(selects) if selects else "SELECT NULL::integer AS l"
        slots_expr = f"ARRAY(SELECT DISTINCT x.l FROM (\n            {union}\n        ) x)"
    else:
        slots_expr = "NULL::integer[]"
    query = f"""WITH chg AS MATERIALIZED (
        {changed_rows(definition, relation, event)}
    )
    SELECT {keys_expr},
           {hops_expr},
           pg_current_snapshot(),
           {slots_expr}"""
    # PL/pgSQL plans a static query once per session, for the transition tables of its first
    # statement: planned for one row (nested loops over the transition tables), it would be
    # quadratic on a statement changing thousands. Large statements run the same query planned
    # for their own size.
    compute = reset_gate + f"""    IF (SELECT count(*) FROM {'old_rows' if event == 'del' else 'new_rows'}) > {REPLAN_ROWS} THEN
        EXECUTE {literal(query)}
           INTO k, h, snap, l;
    ELSE
    {query}
      INTO k, h, snap, l;
    END IF;
    IF cardinality(k) = 0 AND h IS NULL THEN
        RETURN NULL;
    END IF;
"""
    if mode == "immediate":
        act = f"""    IF cardinality(k) > 0 THEN
        l := l || ARRAY(SELECT {key_slot('x')} FROM unnest(k) x);
        r := {names.apply}(k);
        IF cardinality(r.contended) > 0 THEN
            d := tviews.contend({entity}, r.contended);
        END IF;
    END IF;
""" + record_block(names, mode, rank, keys=True, hops=bool(later), dirty=True, full=False, stats=True,
                   slots=True)
    elif mode == "deferred":
        act = (f"    snap := NULL;\n    l := l || ARRAY(SELECT {key_slot('x')} FROM unnest(k) x);\n"
               + record_block(names, mode, rank, keys=True, hops=bool(later), dirty=False, full=False, stats=False,
                              slots=True))
    else:
        act = f"    PERFORM tviews.enqueue({entity}, k, h, false);\n"
    return header + compute + act + footer


def create_triggers(definition: Definition, names: Names, relation: Relation, position: int, event: str) -> list[str]:
    table = ident(*relation.qualified)
    fn = names.trigger_function(position, event)
    what = _EVENT_SQL[event]
    referencing = {
        "ins": " REFERENCING NEW TABLE AS new_rows",
        "upd": " REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "del": " REFERENCING OLD TABLE AS old_rows",
        "trunc": "",
    }[event]
    if event != "upd":
        return [f"CREATE TRIGGER {names.trigger(event)} AFTER {what} ON {table}{referencing}"
                f" FOR EACH STATEMENT EXECUTE FUNCTION {fn}()"]
    flag = gate_setting(names, position)
    is_open = f"pg_catalog.current_setting({literal(flag)}, true)"
    read = definition.columns_read(relation)
    differs = f"{row(read, 'OLD')} IS DISTINCT FROM {row(read, 'NEW')} AND " if read else ""
    return [
        f"CREATE TRIGGER {names.gate()} BEFORE UPDATE ON {table} FOR EACH ROW"
        f" WHEN ({differs}{is_open} IS DISTINCT FROM 'on')"
        f" EXECUTE FUNCTION tviews.open_gate({literal(flag)})",
        f"CREATE TRIGGER {names.trigger(event)} AFTER UPDATE ON {table}{referencing}"
        f" FOR EACH STATEMENT WHEN ({is_open} = 'on') EXECUTE FUNCTION {fn}()",
    ]
