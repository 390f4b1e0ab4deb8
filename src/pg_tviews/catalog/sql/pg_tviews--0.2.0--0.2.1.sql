-- pg_tviews 0.2.0 -> 0.2.1 (patch), two runtime fixes; no TVIEW is rebuilt.
--
-- 1. Recorded repairs no longer deadlock. Two commit steps of one TVIEW that deleted its
-- recorded keys (tviews.repair) in different orders, or recorded a key the other was deleting,
-- waited for each other's row locks in a cycle. Now steps take recorded keys in key order (a step
-- still waits for another that is taking the same keys, as before), and recording is a plain
-- insert that never waits: the table has no unique key any more (a key recorded twice is
-- recomputed once).
--
-- 2. Writers to async TVIEWs NOTIFY only when a worker is waiting for work. PostgreSQL serializes
-- the commits of all transactions that sent a NOTIFY (a global lock held while queueing the
-- notification): one NOTIFY per write capped the throughput of concurrent async writers. A
-- worker waiting for work holds the advisory lock (tviews.lock_class(), 0) (TVIEW ids start at
-- 1); `pg-tviews worker` 0.2.1 takes it before it waits.

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

ALTER TABLE tviews.repair DROP CONSTRAINT repair_pkey;
CREATE INDEX repair_entity_idx ON tviews.repair (entity_id, key);
COMMENT ON TABLE tviews.repair IS 'Keys of TVIEW rows left to recompute (a key may appear more than once)';

CREATE OR REPLACE FUNCTION tviews.commit_recompute(p_entity integer, p_full boolean) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id           text := p_entity::text;
    me           xid8 := pg_current_xact_id();
    all_keys     bigint[];
    hop_sets     jsonb;
    lineage_keys bigint[];
    repair_keys  bigint[];
    r            tviews.apply_result;
    left_over    bigint[];
BEGIN
    IF p_full THEN
        EXECUTE format('SELECT (tviews.%I()).*', 'tv' || p_entity || '_full') INTO r;
        DELETE FROM tviews.repair rp USING (SELECT ctid FROM tviews.repair WHERE entity_id = p_entity
                                              ORDER BY key, ctid FOR UPDATE) s
         WHERE rp.ctid = s.ctid;
    ELSE
        all_keys := string_to_array(trim(BOTH ',' FROM coalesce(current_setting('pg_tviews.k' || id, true), '')), ',')::bigint[];
        SELECT jsonb_agg(h::jsonb) INTO hop_sets
          FROM unnest(string_to_array(trim(BOTH E'\n' FROM coalesce(current_setting('pg_tviews.h' || id, true), '')), E'\n')) h;
        IF current_setting('pg_tviews.spilled', true) = 'on' THEN
            SELECT coalesce(all_keys, '{}') || coalesce(array_agg(k), '{}') INTO all_keys
              FROM tviews.tx_change c, unnest(c.keys) k WHERE c.xid = me AND c.entity_id = p_entity;
            SELECT coalesce(hop_sets, '[]') || coalesce(jsonb_agg(c.hops), '[]') INTO hop_sets
              FROM tviews.tx_change c WHERE c.xid = me AND c.entity_id = p_entity AND c.hops IS NOT NULL;
        END IF;
        IF hop_sets IS NOT NULL AND hop_sets <> '[]' THEN
            EXECUTE format('SELECT tviews.%I($1)', 'tv' || p_entity || '_lineage') INTO lineage_keys USING hop_sets;
        END IF;
        WITH gone AS (DELETE FROM tviews.repair rp USING (SELECT ctid FROM tviews.repair WHERE entity_id = p_entity
                                                            ORDER BY key, ctid FOR UPDATE) s
                       WHERE rp.ctid = s.ctid RETURNING rp.key)
        SELECT array_agg(key) INTO repair_keys FROM gone;
        all_keys := ARRAY(SELECT DISTINCT k FROM unnest(coalesce(all_keys, '{}') || coalesce(lineage_keys, '{}')
                                                        || coalesce(repair_keys, '{}')) k);
        EXECUTE format('SELECT (tviews.%I($1)).*', 'tv' || p_entity || '_apply') INTO r USING all_keys;
    END IF;
    IF cardinality(r.contended) > 0 THEN
        left_over := tviews.contend(p_entity, r.contended);
        INSERT INTO tviews.repair (entity_id, key)
        SELECT p_entity, k FROM unnest(left_over) k;
    END IF;
    RETURN coalesce(r.changed, 0);
END
$$;

CREATE OR REPLACE FUNCTION tviews.pg_tviews_process_queue(batch integer DEFAULT 500) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    claimed  bigint[];
    e        record;
    ids      bigint[];
    all_keys bigint[];
    hop_sets jsonb;
    lin      bigint[];
    is_full  boolean;
    r        tviews.apply_result;
    left_over bigint[];
    started  timestamptz;
    handled  integer := 0;
BEGIN
    SELECT array_agg(q.id) INTO claimed FROM (
        SELECT id FROM tviews.queue
         WHERE processed_at IS NULL AND attempts < tviews.queue_max_attempts() AND next_attempt_at <= clock_timestamp()
         ORDER BY id LIMIT batch
           FOR UPDATE SKIP LOCKED) q;
    -- orphans of dropped TVIEWs
    DELETE FROM tviews.queue q WHERE q.id = ANY (coalesce(claimed, '{}'))
       AND NOT EXISTS (SELECT 1 FROM tviews.entity t WHERE t.id = q.entity_id);
    FOR e IN
        SELECT t.id, t.rank FROM tviews.entity t
         WHERE t.id IN (SELECT q.entity_id FROM tviews.queue q WHERE q.id = ANY (coalesce(claimed, '{}')))
            OR t.id IN (SELECT rp.entity_id FROM tviews.repair rp)
         ORDER BY t.rank, t.id
    LOOP
        started := clock_timestamp();
        SELECT array_agg(q.id), bool_or(q.full_refresh), jsonb_agg(q.hops) FILTER (WHERE q.hops IS NOT NULL)
          INTO ids, is_full, hop_sets
          FROM tviews.queue q WHERE q.id = ANY (coalesce(claimed, '{}')) AND q.entity_id = e.id;
        BEGIN
            PERFORM pg_advisory_xact_lock(tviews.lock_class(), e.id);
            IF coalesce(is_full, false) THEN
                EXECUTE format('SELECT (tviews.%I()).*', 'tv' || e.id || '_full') INTO r;
                DELETE FROM tviews.repair rp USING (SELECT ctid FROM tviews.repair WHERE entity_id = e.id
                                                      ORDER BY key, ctid FOR UPDATE) s
                 WHERE rp.ctid = s.ctid;
            ELSE
                SELECT array_agg(DISTINCT k) INTO all_keys FROM tviews.queue q, unnest(q.keys) k
                 WHERE q.id = ANY (coalesce(ids, '{}'));
                lin := NULL;
                IF hop_sets IS NOT NULL THEN
                    EXECUTE format('SELECT tviews.%I($1)', 'tv' || e.id || '_lineage') INTO lin USING hop_sets;
                END IF;
                WITH gone AS (DELETE FROM tviews.repair rp USING (SELECT ctid FROM tviews.repair WHERE entity_id = e.id
                                                                    ORDER BY key, ctid FOR UPDATE) s
                               WHERE rp.ctid = s.ctid RETURNING rp.key)
                SELECT coalesce(all_keys, '{}') || coalesce(lin, '{}') || coalesce(array_agg(key), '{}')
                  INTO all_keys FROM gone;
                EXECUTE format('SELECT (tviews.%I($1)).*', 'tv' || e.id || '_apply') INTO r
                  USING ARRAY(SELECT DISTINCT k FROM unnest(all_keys) k);
            END IF;
            IF cardinality(r.contended) > 0 THEN
                left_over := tviews.contend(e.id, r.contended);
                INSERT INTO tviews.repair (entity_id, key) SELECT e.id, k FROM unnest(left_over) k;
            END IF;
            UPDATE tviews.queue SET processed_at = clock_timestamp(), attempts = attempts + 1, error_message = NULL
             WHERE id = ANY (coalesce(ids, '{}'));
            INSERT INTO tviews.refresh_event (entity_id, origin, rows_changed, duration_ms)
            VALUES (e.id, 'worker', r.changed, extract(epoch FROM clock_timestamp() - started) * 1000);
        EXCEPTION WHEN OTHERS THEN
            UPDATE tviews.queue
               SET attempts = attempts + 1, error_message = SQLERRM,
                   next_attempt_at = clock_timestamp() + least(interval '5 minutes', interval '1 second' * (2 ^ attempts))
             WHERE id = ANY (coalesce(ids, '{}'));
            INSERT INTO tviews.refresh_event (entity_id, origin, rows_changed, duration_ms, error)
            VALUES (e.id, 'worker', 0, extract(epoch FROM clock_timestamp() - started) * 1000, SQLERRM);
        END;
        handled := handled + coalesce(cardinality(ids), 0);
    END LOOP;
    RETURN handled;
END
$$;

CREATE OR REPLACE FUNCTION tviews.refresh_entity(p_entity integer, p_keys bigint[]) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r tviews.apply_result;
    left_over bigint[];
    started timestamptz := clock_timestamp();
BEGIN
    PERFORM pg_advisory_xact_lock(tviews.lock_class(), p_entity);
    IF p_keys IS NULL THEN
        EXECUTE format('SELECT (tviews.%I()).*', 'tv' || p_entity || '_full') INTO r;
    ELSE
        EXECUTE format('SELECT (tviews.%I($1)).*', 'tv' || p_entity || '_apply') INTO r USING p_keys;
    END IF;
    IF cardinality(r.contended) > 0 THEN
        left_over := tviews.contend(p_entity, r.contended);
        INSERT INTO tviews.repair (entity_id, key) SELECT p_entity, k FROM unnest(left_over) k;
    END IF;
    INSERT INTO tviews.refresh_event (entity_id, origin, rows_changed, duration_ms)
    VALUES (p_entity, 'refresh', r.changed, extract(epoch FROM clock_timestamp() - started) * 1000);
    RETURN r.changed;
END
$$;

CREATE OR REPLACE FUNCTION tviews.pg_tviews_version() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '0.2.1'::text $$;
