-- pg_tviews catalog 0.2.0: schema, version, migration record.
CREATE SCHEMA IF NOT EXISTS tviews;
COMMENT ON SCHEMA tviews IS 'pg_tviews: catalog, runtime and monitoring of TVIEWs';

CREATE FUNCTION tviews.pg_tviews_version() RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '0.2.0'::text $$;

-- Scripts applied by the Python installer (schema mode); empty in extension mode.
CREATE TABLE tviews.schema_migration (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    script       text NOT NULL,
    from_version text,
    to_version   text NOT NULL,
    direction    text NOT NULL CHECK (direction IN ('install', 'up', 'down')),
    checksum     text NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
