-- pg_tviews 0.1.0 -> 0.1.1 (patch): pg_tviews_health_check(). Nothing removed.

CREATE OR REPLACE FUNCTION tviews.pg_tviews_version() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '0.1.1'::text $$;

---------------------------------------------------------------------------------------------------
-- Health
---------------------------------------------------------------------------------------------------

-- One row per finding: component, status (ok, warn, fail), message, severity (info, warning,
-- error). About `sample` keys per TVIEW are compared with the definition, read from a sample of
-- the root's pages (NULL or 0: every row; negative: no comparison).
CREATE FUNCTION tviews.pg_tviews_health_check(sample integer DEFAULT 100)
    RETURNS TABLE (component text, status text, message text, severity text)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t        tviews.entity;
    s        tviews.entity_source;
    target   text;
    rel      regclass;
    missing  text[];
    n        bigint;
    extra    bigint;
    absent   bigint;
    lookup   jsonb;
    oldest   interval;
BEGIN
    FOR t IN SELECT * FROM tviews.entity ORDER BY rank, id LOOP
        target := format('%I.%I', t.schema_name, t.table_name);
        rel := to_regclass(target);
        IF rel IS NULL THEN
            RETURN QUERY SELECT 'catalog', 'fail', format('TVIEW %s: its table is missing (orphaned catalog entry)', target), 'error';
            CONTINUE;
        END IF;
        IF to_regclass(format('tviews.%I', 'tv' || t.id || '_def')) IS NULL
           OR to_regprocedure(format('tviews.%I(bigint[])', 'tv' || t.id || '_apply')) IS NULL THEN
            RETURN QUERY SELECT 'catalog', 'fail', format('TVIEW %s: generated objects are missing', target), 'error';
            CONTINUE;
        END IF;

        -- triggers on every source
        FOR s IN SELECT * FROM tviews.entity_source WHERE entity_id = t.id ORDER BY position LOOP
            IF to_regclass(format('%I.%I', s.schema_name, s.table_name)) IS NULL THEN
                RETURN QUERY SELECT 'triggers', 'fail',
                    format('TVIEW %s: source %I.%I is missing', target, s.schema_name, s.table_name), 'error';
                CONTINUE;
            END IF;
            SELECT array_agg(expected ORDER BY expected) INTO missing
              FROM unnest(ARRAY['pg_tviews_' || t.id || '_ins', 'pg_tviews_' || t.id || '_upd', 'pg_tviews_' || t.id || '_del',
                                'pg_tviews_' || t.id || '_trunc', '~pg_tviews_' || t.id || '_gate']) expected
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger tg
                                WHERE tg.tgrelid = format('%I.%I', s.schema_name, s.table_name)::regclass
                                  AND tg.tgname = expected AND tg.tgenabled <> 'D');
            IF missing IS NOT NULL THEN
                RETURN QUERY SELECT 'triggers', 'fail',
                    format('TVIEW %s: triggers missing or disabled on %I.%I: %s', target, s.schema_name, s.table_name,
                           array_to_string(missing, ', ')), 'error';
            END IF;
            FOR lookup IN SELECT jsonb_array_elements(s.lookups) LOOP
                IF NOT EXISTS (
                    SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a
                      ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                     WHERE i.indrelid = to_regclass(format('%I.%I', lookup ->> 'schema', lookup ->> 'table'))
                       AND i.indisvalid
                       AND a.attname IN (SELECT jsonb_array_elements_text(lookup -> 'columns'))) THEN
                    RETURN QUERY SELECT 'indexes', 'warn',
                        format('TVIEW %s: %s lookups on %I.%I (%s) have no supporting index: CREATE INDEX ON %I.%I (%s)',
                               target, lookup ->> 'purpose', lookup ->> 'schema', lookup ->> 'table',
                               (SELECT string_agg(c, ', ') FROM jsonb_array_elements_text(lookup -> 'columns') c),
                               lookup ->> 'schema', lookup ->> 'table',
                               (SELECT string_agg(quote_ident(c), ', ') FROM jsonb_array_elements_text(lookup -> 'columns') c)),
                        'warning';
                END IF;
            END LOOP;
        END LOOP;

        -- drift: sampled keys of the root compared with the definition
        IF sample < 0 THEN
            extra := 0;
            absent := 0;
        ELSIF coalesce(sample, 0) > 0 THEN
            -- TABLESAMPLE SYSTEM reads only the sampled pages, whatever the table's size
            EXECUTE format(
                'WITH keys AS ((SELECT r.%1$I::bigint AS k FROM %2$I.%3$I r'
                '                 TABLESAMPLE SYSTEM (least(100, 100.0 * $1 / greatest(1, (SELECT reltuples'
                '                   FROM pg_catalog.pg_class WHERE oid = %7$L::regclass)))) LIMIT $1)'
                '              UNION (SELECT t.%4$I::bigint FROM %5$s t'
                '                 TABLESAMPLE SYSTEM (least(100, 100.0 * $1 / greatest(1, (SELECT reltuples'
                '                   FROM pg_catalog.pg_class WHERE oid = %8$L::regclass)))) LIMIT $1)),'
                ' fresh AS (SELECT d.* FROM tviews.%6$I d WHERE d.%4$I IN (SELECT k FROM keys)),'
                ' cur AS (SELECT t.* FROM %5$s t WHERE t.%4$I IN (SELECT k FROM keys))'
                ' SELECT (SELECT count(*) FROM (SELECT * FROM cur EXCEPT ALL SELECT * FROM fresh) x),'
                '        (SELECT count(*) FROM (SELECT * FROM fresh EXCEPT ALL SELECT * FROM cur) y)',
                t.root_key, t.root_schema, t.root_table, t.key_column, target, 'tv' || t.id || '_def',
                format('%I.%I', t.root_schema, t.root_table), target)
            INTO extra, absent USING sample;
        ELSE
            EXECUTE format('SELECT (SELECT count(*) FROM (SELECT * FROM %1$s EXCEPT ALL SELECT * FROM tviews.%2$I) x),'
                           '       (SELECT count(*) FROM (SELECT * FROM tviews.%2$I EXCEPT ALL SELECT * FROM %1$s) y)',
                           target, 'tv' || t.id || '_def')
            INTO extra, absent;
        END IF;
        IF sample < 0 THEN
            NULL;
        ELSIF extra + absent > 0 THEN
            RETURN QUERY SELECT 'drift', 'fail',
                format('TVIEW %s differs from its definition: %s stale or extra rows, %s missing rows%s', target, extra,
                       absent, CASE WHEN coalesce(sample, 0) > 0 THEN format(' (in a sample of %s keys)', sample) ELSE '' END),
                'error';
        ELSE
            RETURN QUERY SELECT 'drift', 'ok',
                format('TVIEW %s matches its definition%s', target,
                       CASE WHEN coalesce(sample, 0) > 0 THEN format(' (sample of %s keys)', sample) ELSE '' END), 'info';
        END IF;

        SELECT count(*) INTO n FROM tviews.repair WHERE entity_id = t.id;
        IF n > 0 THEN
            RETURN QUERY SELECT 'repair', 'warn',
                format('TVIEW %s: %s rows wait for repair (a concurrent holder aborted)', target, n), 'warning';
        END IF;
        RETURN QUERY SELECT 'size', 'ok',
            format('TVIEW %s: about %s rows, %s', target, greatest(c.reltuples, 0)::bigint,
                   pg_size_pretty(pg_total_relation_size(rel))), 'info'
          FROM pg_catalog.pg_class c WHERE c.oid = rel;
    END LOOP;

    SELECT count(*), clock_timestamp() - min(created_at) INTO n, oldest
      FROM tviews.queue WHERE processed_at IS NULL AND attempts < tviews.queue_max_attempts();
    RETURN QUERY SELECT 'queue',
        CASE WHEN n = 0 OR oldest < interval '5 minutes' THEN 'ok' ELSE 'warn' END,
        format('%s pending queue items%s', n, CASE WHEN n > 0 THEN format(', oldest %s old', date_trunc('second', oldest)) ELSE '' END),
        CASE WHEN n = 0 OR oldest < interval '5 minutes' THEN 'info' ELSE 'warning' END;
    SELECT count(*) INTO n FROM tviews.queue WHERE processed_at IS NULL AND attempts >= tviews.queue_max_attempts();
    IF n > 0 THEN
        RETURN QUERY SELECT 'queue', 'fail', format('%s queue items failed permanently (see pg_tviews_queue.error_message)', n), 'error';
    END IF;
    -- the DDL guard (event triggers: only a superuser creates them)
    IF (SELECT count(*) FROM pg_catalog.pg_event_trigger et
         WHERE et.evtname IN ('pg_tviews_ddl_guard', 'pg_tviews_drop_guard') AND et.evtenabled IN ('O', 'A')) < 2 THEN
        RETURN QUERY SELECT 'guard', 'warn',
            'DDL guard absent or disabled: renaming or dropping what TVIEWs read is not refused (its event triggers '
            'need a catalog installed by a superuser): see `pg-tviews doctor`', 'warning';
    ELSIF lower(coalesce(current_setting('pg_tviews.ddl_guard', true), '')) IN ('off', 'false', 'no', '0', 'f', 'n') THEN
        RETURN QUERY SELECT 'guard', 'warn',
            'DDL guard turned off (pg_tviews.ddl_guard): renaming or dropping what TVIEWs read is not refused', 'warning';
    ELSE
        RETURN QUERY SELECT 'guard', 'ok', 'DDL guard active: changes that would break TVIEWs are refused', 'info';
    END IF;
    RETURN QUERY SELECT 'catalog', 'ok', format('pg_tviews %s, %s TVIEWs', tviews.pg_tviews_version(),
                                                 (SELECT count(*) FROM tviews.entity)), 'info';
END
$$;
COMMENT ON FUNCTION tviews.pg_tviews_health_check(integer) IS
    'Findings about every TVIEW (objects, triggers, drift, indexes, repairs, sizes), the queue and the DDL guard';
