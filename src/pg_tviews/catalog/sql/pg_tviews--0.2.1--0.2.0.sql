-- pg_tviews 0.2.1 -> 0.2.0: async writers NOTIFY on every write again (with `pg_tviews.notify`
-- auto or on), which workers of any version understand.

CREATE OR REPLACE FUNCTION tviews.enqueue(p_entity integer, p_keys bigint[], p_hops jsonb, p_full boolean) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    notify text := coalesce(nullif(current_setting('pg_tviews.notify', true), ''), 'auto');
BEGIN
    INSERT INTO tviews.queue (entity_id, keys, hops, full_refresh) VALUES (p_entity, p_keys, p_hops, p_full);
    IF notify = 'on' OR (notify = 'auto' AND current_setting('max_prepared_transactions')::integer = 0) THEN
        PERFORM pg_notify('pg_tviews_queue', p_entity::text);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION tviews.pg_tviews_version() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '0.2.0'::text $$;
