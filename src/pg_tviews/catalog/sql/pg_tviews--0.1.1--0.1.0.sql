-- pg_tviews 0.1.1 -> 0.1.0

DROP FUNCTION tviews.pg_tviews_health_check(integer);

CREATE OR REPLACE FUNCTION tviews.pg_tviews_version() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '0.1.0'::text $$;
