-- pg_tviews 0.2.3 -> 0.2.2: pg_tviews_process_queue gets its 0.2.2 text back (a failing set of
-- queue items fails as a whole); tviews.apply_queued is dropped.

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
        SELECT t.id, t.rank, t.mode FROM tviews.entity t
         WHERE t.id IN (SELECT q.entity_id FROM tviews.queue q WHERE q.id = ANY (coalesce(claimed, '{}')))
            OR t.id IN (SELECT rp.entity_id FROM tviews.repair rp)
         ORDER BY t.rank, t.id
    LOOP
        started := clock_timestamp();
        SELECT array_agg(q.id), bool_or(q.full_refresh), jsonb_agg(q.hops) FILTER (WHERE q.hops IS NOT NULL)
          INTO ids, is_full, hop_sets
          FROM tviews.queue q WHERE q.id = ANY (coalesce(claimed, '{}')) AND q.entity_id = e.id;
        SELECT array_agg(DISTINCT k) INTO all_keys FROM tviews.queue q, unnest(q.keys) k
         WHERE q.id = ANY (coalesce(ids, '{}'));
        IF e.mode <> 'async' THEN
            -- Items left from async mode and recorded repairs of an immediate or deferred TVIEW:
            -- the commit step of this transaction recomputes them, holding their slots.
            PERFORM tviews.record(e.id, all_keys, hop_sets,
                                  CASE WHEN coalesce(is_full, false) THEN 'df' ELSE 'd' END, NULL);
            UPDATE tviews.queue SET processed_at = clock_timestamp(), attempts = attempts + 1, error_message = NULL
             WHERE id = ANY (coalesce(ids, '{}'));
        ELSE
            BEGIN
                PERFORM pg_advisory_xact_lock(tviews.lock_class(), e.id);
                IF coalesce(is_full, false) THEN
                    EXECUTE format('SELECT * FROM tviews.%I()', 'tv' || e.id || '_full') INTO r;
                    DELETE FROM tviews.repair rp USING (SELECT ctid FROM tviews.repair WHERE entity_id = e.id
                                                          ORDER BY key, ctid FOR UPDATE) s
                     WHERE rp.ctid = s.ctid;
                ELSE
                    lin := NULL;
                    IF hop_sets IS NOT NULL THEN
                        EXECUTE format('SELECT tviews.%I($1)', 'tv' || e.id || '_lineage') INTO lin USING hop_sets;
                    END IF;
                    WITH gone AS (DELETE FROM tviews.repair rp USING (SELECT ctid FROM tviews.repair WHERE entity_id = e.id
                                                                        ORDER BY key, ctid FOR UPDATE) s
                                   WHERE rp.ctid = s.ctid RETURNING rp.key)
                    SELECT coalesce(all_keys, '{}') || coalesce(lin, '{}') || coalesce(array_agg(key), '{}')
                      INTO all_keys FROM gone;
                    EXECUTE format('SELECT * FROM tviews.%I($1)', 'tv' || e.id || '_apply') INTO r
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
        END IF;
        handled := handled + coalesce(cardinality(ids), 0);
    END LOOP;
    RETURN handled;
END
$$;


DROP FUNCTION tviews.apply_queued(integer, bigint[], integer, boolean);

CREATE OR REPLACE FUNCTION tviews.pg_tviews_version() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '0.2.2'::text $$;
