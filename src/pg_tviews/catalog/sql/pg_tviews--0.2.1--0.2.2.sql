-- pg_tviews 0.2.1 -> 0.2.2 (patch), runtime fixes; no TVIEW is rebuilt.
--
-- 1. Every row written before the commit step is covered by the commit step's slots. A refresh
-- computes rows from its snapshot and then locks them: a transaction that committed the same row
-- in between was overwritten by the older computation, and nothing noticed when the commit step
-- compared slots with a later snapshot, or took no slot for that key. The snapshot compared with
-- is now the oldest statement-time one (a TVIEW reading another TVIEW armed the commit step from
-- inside the other's refresh, with a later snapshot: see tviews.arm). Keys recorded for repair
-- (tviews.repair) are now recomputed only by a commit step holding their slots, and
-- pg_tviews_refresh on an immediate or deferred TVIEW records its keys for the commit step of its
-- transaction (taking their slots and recomputing them if a transaction sharing one committed
-- since the refresh's snapshot). The worker leaves the recorded repairs of immediate and deferred
-- TVIEWs to the commit step of its transaction.
-- New flags in pg_tviews.x<id>: r (a full refresh ran before the commit step; recompute it all if
-- a slot was taken since its snapshot), e (recorded by pg_tviews_refresh or a worker round, which
-- count their own work in the statistics).
--
-- 2. A commit step that found a slot taken since its snapshot evaluates its lineages again and
-- takes the slots of what they reach now. In a session that had never spilled its change records,
-- pg_tviews.spilled was NULL, so was `coarse`, and that round was skipped: rows reached only
-- through the other transaction's change were written without their slots. The step now keeps
-- the slots it holds for that round and only adds the ones the new evaluation needs (if free):
-- giving them all back and waiting for them again made most contended steps go round until they
-- took all slots. And tviews.contend no longer takes a held row whose holder ended meanwhile (no
-- lock left on its xmax) for one it must not wait for: it takes the row.
--
-- 3. A composite-returning function called as `SELECT (f(x)).*` runs once per column:
-- recomputations at commit, by the worker, by pg_tviews_refresh and after a wait for a held row
-- computed their rows twice. They call `SELECT * FROM f(x)` now.

-- First change of a transaction: arm the commit step. `p_snap` is the snapshot the statement-time
-- refresh started from (NULL in deferred mode). The commit step compares slots with the oldest
-- snapshot statement-time rows were computed from. A trigger of a TVIEW reading another TVIEW
-- runs inside the refresh of that one, from a later snapshot, and arms first: nested triggers
-- leave pg_tviews.snapshot empty for the outer trigger, which records its own when it finds it
-- empty, and keep theirs in pg_tviews.nested_snapshot; the commit step takes the older of the two.
-- Without a snapshot of its own (deferred mode) the snapshot of now stands in: older than any a
-- later statement refreshes from.
CREATE OR REPLACE FUNCTION tviews.arm(p_snap pg_snapshot) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO tviews.tx_marker (xid) VALUES (pg_current_xact_id());
    PERFORM set_config('pg_tviews.xact', pg_current_xact_id()::text, true);
    IF pg_trigger_depth() > 1 THEN
        PERFORM set_config('pg_tviews.snapshot', '', true);
        PERFORM set_config('pg_tviews.nested_snapshot', coalesce(p_snap, pg_current_snapshot())::text, true);
    ELSE
        PERFORM set_config('pg_tviews.snapshot', coalesce(p_snap, pg_current_snapshot())::text, true);
        PERFORM set_config('pg_tviews.nested_snapshot', '', true);
    END IF;
    PERFORM set_config('pg_tviews.todo', ',', true);
END
$$;

-- Of two snapshots taken by this backend one after the other, the older (the one that sees less).
CREATE FUNCTION tviews.older_snapshot(a pg_snapshot, b pg_snapshot) RETURNS pg_snapshot
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN a IS NULL THEN b
                WHEN b IS NULL THEN a
                WHEN pg_snapshot_xmax(a) <> pg_snapshot_xmax(b)
                    THEN CASE WHEN pg_snapshot_xmax(a) < pg_snapshot_xmax(b) THEN a ELSE b END
                -- no transaction started in between: the older one lists more as in progress
                WHEN (SELECT count(*) FROM pg_snapshot_xip(a)) >= (SELECT count(*) FROM pg_snapshot_xip(b)) THEN a
                ELSE b END
$$;

CREATE OR REPLACE FUNCTION tviews.contend(p_entity integer, p_keys bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t       tviews.entity;
    pending bigint[] := p_keys;
    r       tviews.apply_result;
    safe    boolean;
    saved_lock_timeout text := current_setting('lock_timeout');
    wait_ms integer := least(200, greatest(1, extract(epoch FROM current_setting('deadlock_timeout')::interval) * 250));
    -- the application's own lock_timeout bounds the total wait (then the keys are yielded)
    budget  interval := nullif(current_setting('lock_timeout')::interval, '0');
    started timestamptz := clock_timestamp();
BEGIN
    SELECT * INTO t FROM tviews.entity WHERE id = p_entity;
    WHILE cardinality(pending) > 0 LOOP
        -- Unsafe: a holder that is prepared (no backend) or waiting for something. A row whose
        -- xmax holds no lock any more was released meanwhile (its holder ended, perhaps by
        -- rolling back, after the refresh skipped it): the lock below takes it at once.
        EXECUTE format(
            'WITH holder AS ('
            '   SELECT t.xmax, l.pid FROM %I.%I t JOIN pg_catalog.pg_locks l'
            '     ON l.locktype = ''transactionid'' AND l.granted AND l.transactionid = t.xmax'
            '    WHERE t.%I = ANY ($1) AND t.xmax <> ''0''::xid)'
            ' SELECT NOT EXISTS (SELECT 1 FROM holder WHERE pid IS NULL'
            '                       OR cardinality(pg_catalog.pg_blocking_pids(pid)) > 0)'
            '    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a'
            '                     WHERE a.wait_event_type = ''Lock'''
            '                       AND pg_catalog.pg_backend_pid() = ANY (pg_catalog.pg_blocking_pids(a.pid)))',
            t.schema_name, t.table_name, t.key_column)
        INTO safe USING pending;
        IF NOT safe OR clock_timestamp() - started > budget THEN
            RETURN pending;
        END IF;
        BEGIN
            PERFORM set_config('lock_timeout', wait_ms || 'ms', true);
            EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM %I.%I t WHERE t.%I = ANY ($1)'
                           ' ORDER BY t.%I FOR UPDATE) s',
                           t.schema_name, t.table_name, t.key_column, t.key_column)
            USING pending;
            PERFORM set_config('lock_timeout', saved_lock_timeout, true);
            EXECUTE format('SELECT * FROM tviews.%I($1)', 'tv' || p_entity || '_apply') INTO r USING pending;
            pending := coalesce(r.contended, '{}');
        EXCEPTION
            WHEN lock_not_available THEN
                NULL;  -- holders still busy: check again whether waiting is safe
            WHEN deadlock_detected THEN
                RETURN pending;  -- a cycle formed while waiting: give way
        END;
    END LOOP;
    RETURN pending;
END
$$;

CREATE OR REPLACE FUNCTION tviews.tx_commit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me         xid8 := pg_current_xact_id();
    rc         boolean := current_setting('transaction_isolation') = 'read committed';
    first_snap pg_snapshot;
    snap       pg_snapshot;
    done       text := ',';
    entry      text;
    best       text;
    best_key   integer[];
    parts      text[];
    id         text;
    recorded   integer[];
    repairs    bigint[];
    repair_slots integer[];
    slots      integer[];
    more       integer[];
    coarse     boolean;
    attempt    integer;
    extended   integer;
    interfered boolean;
    stale      boolean;
    flags      text;
    stats      text;
    changed    bigint;
    started    timestamptz;
    ids        integer[] := '{}';
    rows       bigint[] := '{}';
    ms         float8[] := '{}';
BEGIN
    IF coalesce(current_setting('pg_tviews.xact', true), '') <> me::text THEN
        RETURN NULL;  -- already finished (SET CONSTRAINTS ... IMMEDIATE ran the step earlier)
    END IF;
    IF rc THEN
        first_snap := nullif(current_setting('pg_tviews.snapshot'), '')::pg_snapshot;
        IF coalesce(current_setting('pg_tviews.nested_snapshot', true), '') <> '' THEN
            first_snap := tviews.older_snapshot(first_snap, current_setting('pg_tviews.nested_snapshot')::pg_snapshot);
        END IF;
    ELSE
        first_snap := pg_current_snapshot();
    END IF;
    LOOP
        best := NULL;
        FOREACH entry IN ARRAY string_to_array(trim(BOTH ',' FROM current_setting('pg_tviews.todo')), ',') LOOP
            CONTINUE WHEN strpos(done, ',' || entry || ',') > 0;
            parts := string_to_array(entry, ':');
            IF best IS NULL OR ARRAY[parts[1]::int, parts[2]::int] < best_key THEN
                best := entry;
                best_key := ARRAY[parts[1]::int, parts[2]::int];
            END IF;
        END LOOP;
        EXIT WHEN best IS NULL;
        done := done || best || ',';
        parts := string_to_array(best, ':');
        id := parts[2];
        started := clock_timestamp();
        flags := coalesce(current_setting('pg_tviews.x' || id, true), '');
        recorded := string_to_array(trim(BOTH ',' FROM coalesce(current_setting('pg_tviews.l' || id, true), '')), ',')::integer[];
        -- A commit that cannot list its slots (TRUNCATE, too many changes) takes them all.
        coarse := strpos(flags, 'f') > 0 OR strpos(flags, 'c') > 0 OR coalesce(current_setting('pg_tviews.spilled', true), '') = 'on';

        -- Take the slots, and find out whether a transaction that shares one committed after the
        -- snapshot our rows were computed from (see the notes above). At READ COMMITTED, when one
        -- did, keep the slots and evaluate the lineages again from a fresh snapshot: nobody can
        -- commit into a slot this step holds, so only slots the new evaluation adds can still
        -- interfere. Those are taken only if no one holds them (waiting for a slot while holding
        -- others out of slot order could deadlock); otherwise, or after a few extensions, give the
        -- slots back (rolling back the subtransaction releases their row locks) and take the new
        -- set in slot order: a few rounds, then all slots.
        attempt := 0;
        stale := parts[3] <> 'i' OR first_snap IS NULL;  -- deferred: computed at commit in any case
        snap := CASE WHEN parts[3] = 'i' THEN first_snap END;
        LOOP
            attempt := attempt + 1;
            -- Keys recorded for repair are recomputed by this step, which takes their slots like
            -- those of its own keys: a row is only ever written under its slot, so a transaction
            -- committing the same row meanwhile is seen (keys recorded after this look are left
            -- to a later step).
            repairs := ARRAY(SELECT DISTINCT r.key FROM tviews.repair r WHERE r.entity_id = id::integer);
            repair_slots := CASE WHEN cardinality(repairs) > 0 THEN tviews.key_slots(repairs) ELSE '{}' END;
            IF coarse OR attempt > 4 OR cardinality(repairs) > 1000 THEN
                slots := ARRAY(SELECT generate_series(0, tviews.slot_count() - 1));
                snap := coalesce(snap, first_snap);
            ELSIF snap IS NULL OR attempt > 1 THEN
                snap := CASE WHEN rc THEN pg_current_snapshot() ELSE first_snap END;
                slots := coalesce(recorded, '{}') || tviews.lineage_slots(id::integer) || repair_slots;
            ELSE
                slots := coalesce(recorded, '{}') || repair_slots;
            END IF;
            BEGIN
                interfered := tviews.take_slots(id::integer, slots, snap);
                extended := 0;
                WHILE interfered AND rc AND NOT coarse AND attempt <= 4 AND extended < 4 LOOP
                    extended := extended + 1;
                    stale := true;
                    snap := pg_current_snapshot();
                    repairs := ARRAY(SELECT DISTINCT r.key FROM tviews.repair r WHERE r.entity_id = id::integer);
                    IF cardinality(repairs) > 1000 THEN
                        RAISE EXCEPTION USING ERRCODE = 'T0V01';
                    END IF;
                    repair_slots := CASE WHEN cardinality(repairs) > 0 THEN tviews.key_slots(repairs) ELSE '{}' END;
                    more := ARRAY(SELECT unnest(coalesce(recorded, '{}') || tviews.lineage_slots(id::integer) || repair_slots)
                                  EXCEPT SELECT unnest(slots));
                    IF cardinality(more) = 0 THEN
                        interfered := false;
                        EXIT;
                    END IF;
                    BEGIN
                        IF (SELECT count(*) FROM (SELECT 1 FROM tviews.commit_slot c
                                                   WHERE c.entity_id = id::integer AND c.slot = ANY (more)
                                                   ORDER BY c.slot FOR UPDATE NOWAIT) x) < cardinality(more) THEN
                            RAISE EXCEPTION USING ERRCODE = 'T0V01';  -- never taken yet: no upsert out of order
                        END IF;
                    EXCEPTION WHEN lock_not_available THEN
                        RAISE EXCEPTION USING ERRCODE = 'T0V01';  -- held by someone: give everything back
                    END;
                    interfered := tviews.take_slots(id::integer, more, snap);  -- locked above: no wait
                    slots := slots || more;
                END LOOP;
                IF interfered AND rc AND NOT coarse AND attempt <= 4 THEN
                    RAISE EXCEPTION USING ERRCODE = 'T0V01';  -- give the slots back, evaluate again
                END IF;
            EXCEPTION WHEN SQLSTATE 'T0V01' THEN
                stale := true;
                CONTINUE;
            END;
            EXIT;
        END LOOP;
        IF interfered AND NOT rc THEN
            -- This snapshot cannot see a concurrent change to the TVIEW's sources; refreshing from
            -- it could leave rows stale.
            RAISE EXCEPTION USING
                ERRCODE = 'serialization_failure',
                MESSAGE = format('could not serialize access: sources of TVIEW %s were changed by a concurrent transaction',
                                 (SELECT format('%I.%I', e.schema_name, e.table_name) FROM tviews.entity e
                                   WHERE e.id = parts[2]::integer)),
                HINT = 'retry the transaction';
        END IF;
        IF stale OR interfered OR strpos(flags, 'd') > 0 OR strpos(flags, 'f') > 0 OR cardinality(repairs) > 0 THEN
            -- r: a full refresh ran before the commit step; recompute everything only if it may be stale
            changed := tviews.commit_recompute(id::integer,
                                               strpos(flags, 'f') > 0 OR (strpos(flags, 'r') > 0 AND (stale OR interfered)),
                                               repairs);
        ELSE
            changed := 0;
        END IF;

        stats := nullif(current_setting('pg_tviews.s' || id, true), '');
        -- what only pg_tviews_refresh or a worker round recorded (flag e: they count their own
        -- work) counts as a refresh of the transaction when the step recomputed rows
        IF stats IS NOT NULL OR changed > 0 OR strpos(flags, 'e') = 0 THEN
            stats := coalesce(stats, '0 0');
            ids := ids || id::integer;
            rows := rows || (changed + split_part(stats, ' ', 1)::bigint);
            ms := ms || (extract(epoch FROM clock_timestamp() - started) * 1000 + split_part(stats, ' ', 2)::float8);
        END IF;
        -- the transaction may go on (SET CONSTRAINTS ... IMMEDIATE): start afresh for this TVIEW
        PERFORM set_config('pg_tviews.k' || id, '', true);
        PERFORM set_config('pg_tviews.h' || id, '', true);
        PERFORM set_config('pg_tviews.x' || id, '', true);
        PERFORM set_config('pg_tviews.s' || id, '', true);
        PERFORM set_config('pg_tviews.l' || id, '', true);
    END LOOP;
    INSERT INTO tviews.refresh_event (entity_id, origin, rows_changed, duration_ms)
    SELECT i, 'transaction', n, t FROM unnest(ids, rows, ms) AS u(i, n, t);
    DELETE FROM tviews.tx_marker WHERE xid = me;
    IF current_setting('pg_tviews.spilled', true) = 'on' THEN
        DELETE FROM tviews.tx_change WHERE xid = me;
        PERFORM set_config('pg_tviews.spilled', '', true);
    END IF;
    PERFORM set_config('pg_tviews.xact', '', true);
    RETURN NULL;
END
$$;

-- Slots of TVIEW keys (compiler/slots.py, key_slot).
CREATE FUNCTION tviews.key_slots(p_keys bigint[]) RETURNS integer[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY(SELECT DISTINCT pg_catalog.hash_record(ROW(0, k)) & (tviews.slot_count() - 1) FROM unnest(p_keys) k)
$$;

-- Recompute what the current transaction recorded for one TVIEW, and the recorded repairs
-- `p_repair` (the commit step holds their slots); returns the rows changed.
DROP FUNCTION tviews.commit_recompute(integer, boolean);
CREATE FUNCTION tviews.commit_recompute(p_entity integer, p_full boolean, p_repair bigint[]) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id           text := p_entity::text;
    me           xid8 := pg_current_xact_id();
    all_keys     bigint[];
    hop_sets     jsonb;
    lineage_keys bigint[];
    r            tviews.apply_result;
    left_over    bigint[];
BEGIN
    IF p_full THEN
        EXECUTE format('SELECT * FROM tviews.%I()', 'tv' || p_entity || '_full') INTO r;
        DELETE FROM tviews.repair rp USING (SELECT ctid FROM tviews.repair WHERE entity_id = p_entity
                                              ORDER BY key, ctid FOR UPDATE) s
         WHERE rp.ctid = s.ctid;  -- a full refresh holds every slot
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
        IF cardinality(p_repair) > 0 THEN
            DELETE FROM tviews.repair rp USING (SELECT ctid FROM tviews.repair
                                                  WHERE entity_id = p_entity AND key = ANY (p_repair)
                                                  ORDER BY key, ctid FOR UPDATE) s
             WHERE rp.ctid = s.ctid;
        END IF;
        all_keys := ARRAY(SELECT DISTINCT k FROM unnest(coalesce(all_keys, '{}') || coalesce(lineage_keys, '{}')
                                                        || coalesce(p_repair, '{}')) k);
        EXECUTE format('SELECT * FROM tviews.%I($1)', 'tv' || p_entity || '_apply') INTO r USING all_keys;
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

-- Record changes for the commit step of the current transaction, as the statement triggers of an
-- immediate or deferred TVIEW do (compiler/triggers.py, record_block): keys to recompute (their
-- slots too), lineage entry values (`p_hops`, a jsonb array of documents), flags, and the
-- snapshot rows were computed from before the commit step (NULL: none were).
CREATE FUNCTION tviews.record(p_entity integer, p_keys bigint[], p_hops jsonb, p_flags text, p_snap pg_snapshot)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    id    text := p_entity::text;
    entry text;
    acc   text;
    flags text := coalesce(p_flags, '') || 'e';  -- e: recorded here, not by a statement trigger
BEGIN
    SELECT format('%s:%s:%s', t.rank, t.id, left(t.mode, 1)) INTO entry FROM tviews.entity t WHERE t.id = p_entity;
    IF coalesce(current_setting('pg_tviews.xact', true), '') <> pg_current_xact_id()::text THEN
        PERFORM tviews.arm(p_snap);
    ELSIF p_snap IS NOT NULL AND current_setting('pg_tviews.snapshot') = '' THEN
        PERFORM set_config('pg_tviews.snapshot', p_snap::text, true);
    END IF;
    acc := current_setting('pg_tviews.todo');
    IF strpos(acc, ',' || entry || ',') = 0 THEN
        PERFORM set_config('pg_tviews.todo', acc || entry || ',', true);
    END IF;
    IF cardinality(p_keys) > 0 THEN
        acc := coalesce(current_setting('pg_tviews.k' || id, true), '');
        IF length(acc) > 60000 THEN
            PERFORM tviews.spill(p_entity, 'k', acc);
            acc := '';
        END IF;
        PERFORM set_config('pg_tviews.k' || id, acc || ',' || array_to_string(p_keys, ','), true);
        acc := coalesce(current_setting('pg_tviews.l' || id, true), '') || ',' || array_to_string(tviews.key_slots(p_keys), ',');
        IF length(acc) > 30000 THEN  -- too many to check one by one: a coarse commit
            flags := flags || 'c';
        ELSE
            PERFORM set_config('pg_tviews.l' || id, acc, true);
        END IF;
    END IF;
    IF jsonb_array_length(coalesce(p_hops, '[]')) > 0 THEN
        acc := coalesce(current_setting('pg_tviews.h' || id, true), '');
        IF length(acc) > 60000 THEN
            PERFORM tviews.spill(p_entity, 'h', acc);
            acc := '';
        END IF;
        PERFORM set_config('pg_tviews.h' || id,
                           acc || (SELECT string_agg(h::text || E'\n', '') FROM jsonb_array_elements(p_hops) h), true);
    END IF;
    PERFORM set_config('pg_tviews.x' || id, coalesce(current_setting('pg_tviews.x' || id, true), '') || flags, true);
END
$$;

-- pg_tviews_refresh. On an immediate or deferred TVIEW the rows are written now and recorded for
-- the commit step like a statement's (c and r: a full refresh takes every slot, and is done again
-- if a slot was taken since its snapshot); async TVIEWs are written only under their advisory lock.
CREATE OR REPLACE FUNCTION tviews.refresh_entity(p_entity integer, p_keys bigint[]) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r tviews.apply_result;
    left_over bigint[];
    started timestamptz := clock_timestamp();
    is_async boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(tviews.lock_class(), p_entity);
    SELECT t.mode = 'async' INTO is_async FROM tviews.entity t WHERE t.id = p_entity;
    IF NOT is_async THEN  -- armed before the refresh: triggers of TVIEWs reading this one keep its snapshot
        PERFORM tviews.record(p_entity, p_keys, NULL, CASE WHEN p_keys IS NULL THEN 'cr' ELSE '' END,
                              pg_current_snapshot());
    END IF;
    IF p_keys IS NULL THEN
        EXECUTE format('SELECT * FROM tviews.%I()', 'tv' || p_entity || '_full') INTO r;
    ELSE
        EXECUTE format('SELECT * FROM tviews.%I($1)', 'tv' || p_entity || '_apply') INTO r USING p_keys;
    END IF;
    IF cardinality(r.contended) > 0 THEN
        left_over := tviews.contend(p_entity, r.contended);
    END IF;
    IF cardinality(left_over) > 0 THEN
        IF is_async THEN
            INSERT INTO tviews.repair (entity_id, key) SELECT p_entity, k FROM unnest(left_over) k;
        ELSE  -- rows held by others: the commit step recomputes them
            PERFORM tviews.record(p_entity, CASE WHEN p_keys IS NULL THEN left_over END, NULL, 'd', NULL);
        END IF;
    END IF;
    INSERT INTO tviews.refresh_event (entity_id, origin, rows_changed, duration_ms)
    VALUES (p_entity, 'refresh', r.changed, extract(epoch FROM clock_timestamp() - started) * 1000);
    RETURN r.changed;
END
$$;

CREATE OR REPLACE FUNCTION tviews.pg_tviews_version() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '0.2.2'::text $$;
