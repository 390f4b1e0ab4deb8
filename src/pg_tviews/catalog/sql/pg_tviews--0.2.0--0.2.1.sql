-- pg_tviews 0.2.0 -> 0.2.1 (patch): writers to async TVIEWs NOTIFY only when a worker is waiting
-- for work. PostgreSQL serializes the commits of all transactions that sent a NOTIFY (a global
-- lock held while queueing the notification): one NOTIFY per write capped the throughput of
-- concurrent async writers. A worker waiting for work holds the advisory lock
-- (tviews.lock_class(), 0) (TVIEW ids start at 1); `pg-tviews worker` 0.2.1 takes it before it
-- waits. Nothing else changes: the queue, the worker's polling and every other object stay as they were.

CREATE OR REPLACE FUNCTION tviews.enqueue(p_entity integer, p_keys bigint[], p_hops jsonb, p_full boolean) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    notify text := coalesce(nullif(current_setting('pg_tviews.notify', true), ''), 'auto');
BEGIN
    INSERT INTO tviews.queue (entity_id, keys, hops, full_refresh) VALUES (p_entity, p_keys, p_hops, p_full);
    IF notify = 'always' THEN
        PERFORM pg_notify('pg_tviews_queue', p_entity::text);
    ELSIF notify = 'on' OR (notify = 'auto' AND current_setting('max_prepared_transactions')::integer = 0) THEN
        -- Wake a worker only if one is waiting (it holds the lock). Otherwise every worker is busy
        -- and will find this item in a later round: taking the lock shared, held until this
        -- transaction ends, keeps any worker from starting to wait before this item is visible
        -- (a worker takes the lock and then looks at the queue once more before it waits).
        IF NOT pg_try_advisory_xact_lock_shared(tviews.lock_class(), 0) THEN
            PERFORM pg_notify('pg_tviews_queue', p_entity::text);
        END IF;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION tviews.pg_tviews_version() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '0.2.1'::text $$;
