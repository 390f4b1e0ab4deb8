-- pg_tviews 0.2.2 -> 0.2.3 (patch), a runtime fix; no TVIEW is rebuilt.
--
-- A worker round applies the claimed items of each async TVIEW together. When that failed (a row
-- of the definition that raises for some data, a lock timeout), every item of the round was marked
-- failed, and after the last attempt kept failed: one bad change left the rows of up to `batch`
-- good ones stale. The items are now applied by tviews.apply_queued, which splits a failing set in
-- halves, each in its own subtransaction, down to the items that fail on their own (within a bound
-- on the attempts): only those count an attempt and keep the error. Any subset can be applied on
-- its own, since recomputation starts from the committed state of the sources.

-- Apply queue items `p_ids` of async TVIEW `p_entity` (claimed by the caller) in a subtransaction;
-- when that fails, apply each half the same way, down to the items that fail on their own, which
-- count an attempt, keep the error and wait for their retry. `p_budget` bounds the attempts (a
-- failure that is not an item's, a broken trigger on the TVIEW say, would otherwise cost two
-- attempts per item): once it is spent, what is left fails as a whole. Recorded repairs of the
-- TVIEW are recomputed with the first attempt only (`p_repairs`); when it fails they wait for the
-- next round, so that a repair that fails does not fail every item. Returns the budget left.
CREATE FUNCTION tviews.apply_queued(p_entity integer, p_ids bigint[], p_budget integer, p_repairs boolean)
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    all_keys  bigint[];
    hop_sets  jsonb;
    lin       bigint[];
    is_full   boolean;
    r         tviews.apply_result;
    left_over bigint[];
    started   timestamptz := clock_timestamp();
    half      integer := cardinality(p_ids) / 2;
    budget    integer := p_budget - 1;
    failure   text;
BEGIN
    BEGIN
        SELECT bool_or(q.full_refresh), jsonb_agg(q.hops) FILTER (WHERE q.hops IS NOT NULL)
          INTO is_full, hop_sets
          FROM tviews.queue q WHERE q.id = ANY (p_ids);
        SELECT array_agg(DISTINCT k) INTO all_keys FROM tviews.queue q, unnest(q.keys) k
         WHERE q.id = ANY (p_ids);
        PERFORM pg_advisory_xact_lock(tviews.lock_class(), p_entity);
        IF coalesce(is_full, false) THEN
            EXECUTE format('SELECT * FROM tviews.%I()', 'tv' || p_entity || '_full') INTO r;
            DELETE FROM tviews.repair rp USING (SELECT ctid FROM tviews.repair WHERE entity_id = p_entity
                                                  ORDER BY key, ctid FOR UPDATE) s
             WHERE rp.ctid = s.ctid;
        ELSE
            IF hop_sets IS NOT NULL THEN
                EXECUTE format('SELECT tviews.%I($1)', 'tv' || p_entity || '_lineage') INTO lin USING hop_sets;
            END IF;
            IF p_repairs THEN
                WITH gone AS (DELETE FROM tviews.repair rp USING (SELECT ctid FROM tviews.repair WHERE entity_id = p_entity
                                                                    ORDER BY key, ctid FOR UPDATE) s
                               WHERE rp.ctid = s.ctid RETURNING rp.key)
                SELECT coalesce(all_keys, '{}') || coalesce(array_agg(key), '{}') INTO all_keys FROM gone;
            END IF;
            EXECUTE format('SELECT * FROM tviews.%I($1)', 'tv' || p_entity || '_apply') INTO r
              USING ARRAY(SELECT DISTINCT k FROM unnest(coalesce(all_keys, '{}') || coalesce(lin, '{}')) k);
        END IF;
        IF cardinality(r.contended) > 0 THEN
            left_over := tviews.contend(p_entity, r.contended);
            INSERT INTO tviews.repair (entity_id, key) SELECT p_entity, k FROM unnest(left_over) k;
        END IF;
        UPDATE tviews.queue SET processed_at = clock_timestamp(), attempts = attempts + 1, error_message = NULL
         WHERE id = ANY (p_ids);
        INSERT INTO tviews.refresh_event (entity_id, origin, rows_changed, duration_ms)
        VALUES (p_entity, 'worker', r.changed, extract(epoch FROM clock_timestamp() - started) * 1000);
        RETURN budget;
    EXCEPTION WHEN OTHERS THEN
        failure := SQLERRM;
    END;
    IF half > 0 AND budget >= 2 THEN
        budget := tviews.apply_queued(p_entity, p_ids[1:half], budget, false);
        IF budget > 0 THEN
            RETURN tviews.apply_queued(p_entity, p_ids[half + 1:], budget, false);
        END IF;
        p_ids := p_ids[half + 1:];  -- the budget is spent: the second half fails as a whole
    END IF;
    UPDATE tviews.queue
       SET attempts = attempts + 1, error_message = failure,
           next_attempt_at = clock_timestamp() + least(interval '5 minutes', interval '1 second' * (2 ^ attempts))
     WHERE id = ANY (p_ids);
    INSERT INTO tviews.refresh_event (entity_id, origin, rows_changed, duration_ms, error)
    VALUES (p_entity, 'worker', 0, extract(epoch FROM clock_timestamp() - started) * 1000, failure);
    RETURN greatest(budget, 0);
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
    is_full  boolean;
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
        SELECT array_agg(q.id) INTO ids
          FROM tviews.queue q WHERE q.id = ANY (coalesce(claimed, '{}')) AND q.entity_id = e.id;
        IF e.mode <> 'async' THEN
            -- Items left from async mode and recorded repairs of an immediate or deferred TVIEW:
            -- the commit step of this transaction recomputes them, holding their slots.
            SELECT bool_or(q.full_refresh), jsonb_agg(q.hops) FILTER (WHERE q.hops IS NOT NULL)
              INTO is_full, hop_sets
              FROM tviews.queue q WHERE q.id = ANY (coalesce(ids, '{}'));
            SELECT array_agg(DISTINCT k) INTO all_keys FROM tviews.queue q, unnest(q.keys) k
             WHERE q.id = ANY (coalesce(ids, '{}'));
            PERFORM tviews.record(e.id, all_keys, hop_sets,
                                  CASE WHEN coalesce(is_full, false) THEN 'df' ELSE 'd' END, NULL);
            UPDATE tviews.queue SET processed_at = clock_timestamp(), attempts = attempts + 1, error_message = NULL
             WHERE id = ANY (coalesce(ids, '{}'));
        ELSE
            -- attempts for one TVIEW's items of the round: enough to find a few failing items among
            -- thousands (two per halving)
            PERFORM tviews.apply_queued(e.id, coalesce(ids, '{}'), 64, true);
        END IF;
        handled := handled + coalesce(cardinality(ids), 0);
    END LOOP;
    RETURN handled;
END
$$;


CREATE OR REPLACE FUNCTION tviews.pg_tviews_version() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '0.2.3'::text $$;
