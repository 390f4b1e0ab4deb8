"""The read-model implementations a benchmark compares, each installed in its own database."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from .. import catalog, engine
from .blog import TV_POST_SQL

# The ceiling for trigger-based maintenance: statement-level triggers with transition tables
# written by hand for this one read model, recomputing exactly the affected rows set-based.
# It is not exact under concurrency (it refreshes from each statement's snapshot).
HANDWRITTEN_SQL = f"""
CREATE VIEW v_post AS {TV_POST_SQL};
CREATE TABLE tv_post AS SELECT * FROM v_post;
ALTER TABLE tv_post ADD PRIMARY KEY (pk_post);

CREATE FUNCTION hw_refresh(keys bigint[]) RETURNS void
    LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    DELETE FROM tv_post t WHERE t.pk_post = ANY (keys)
       AND NOT EXISTS (SELECT FROM tb_post p WHERE p.pk_post = t.pk_post);
    INSERT INTO tv_post SELECT * FROM v_post v WHERE v.pk_post = ANY (keys)
    ON CONFLICT (pk_post) DO UPDATE SET id = excluded.id, fk_user = excluded.fk_user, data = excluded.data
     WHERE (tv_post.id, tv_post.fk_user, tv_post.data) IS DISTINCT FROM (excluded.id, excluded.fk_user, excluded.data);
END $$;

CREATE FUNCTION hw_user_upd() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE k bigint[];
BEGIN
    SELECT array_agg(p.pk_post) INTO k FROM tb_post p
     WHERE p.fk_user IN (SELECT n.pk_user FROM new_rows n JOIN old_rows o USING (pk_user)
                          WHERE (n.id, n.name) IS DISTINCT FROM (o.id, o.name));
    IF k IS NOT NULL THEN PERFORM hw_refresh(k); END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER hw_user_upd AFTER UPDATE ON tb_user REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hw_user_upd();

CREATE FUNCTION hw_post_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM hw_refresh(ARRAY(SELECT pk_post FROM new_rows)); RETURN NULL; END $$;
CREATE FUNCTION hw_post_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM hw_refresh(ARRAY(SELECT pk_post FROM old_rows)); RETURN NULL; END $$;
CREATE FUNCTION hw_post_upd() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE k bigint[];
BEGIN
    SELECT array_agg(DISTINCT x) INTO k FROM (
        SELECT n.pk_post AS x FROM new_rows n LEFT JOIN old_rows o USING (pk_post)
         WHERE (n.id, n.fk_user, n.title) IS DISTINCT FROM (o.id, o.fk_user, o.title)
        UNION ALL
        SELECT o.pk_post FROM old_rows o LEFT JOIN new_rows n USING (pk_post)
         WHERE (n.id, n.fk_user, n.title) IS DISTINCT FROM (o.id, o.fk_user, o.title)) s;
    IF k IS NOT NULL THEN PERFORM hw_refresh(k); END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER hw_post_ins AFTER INSERT ON tb_post REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hw_post_ins();
CREATE TRIGGER hw_post_upd AFTER UPDATE ON tb_post REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hw_post_upd();
CREATE TRIGGER hw_post_del AFTER DELETE ON tb_post REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hw_post_del();

CREATE FUNCTION hw_comment_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM hw_refresh(ARRAY(SELECT DISTINCT fk_post FROM new_rows)); RETURN NULL; END $$;
CREATE FUNCTION hw_comment_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM hw_refresh(ARRAY(SELECT DISTINCT fk_post FROM old_rows)); RETURN NULL; END $$;
CREATE FUNCTION hw_comment_upd() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE k bigint[];
BEGIN
    SELECT array_agg(DISTINCT x) INTO k FROM (
        SELECT n.fk_post AS x FROM new_rows n JOIN old_rows o USING (pk_comment)
         WHERE (n.id, n.body, n.fk_post) IS DISTINCT FROM (o.id, o.body, o.fk_post)
        UNION ALL
        SELECT o.fk_post FROM new_rows n JOIN old_rows o USING (pk_comment)
         WHERE (n.id, n.body, n.fk_post) IS DISTINCT FROM (o.id, o.body, o.fk_post)) s;
    IF k IS NOT NULL THEN PERFORM hw_refresh(k); END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER hw_comment_ins AFTER INSERT ON tb_comment REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hw_comment_ins();
CREATE TRIGGER hw_comment_upd AFTER UPDATE ON tb_comment REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hw_comment_upd();
CREATE TRIGGER hw_comment_del AFTER DELETE ON tb_comment REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hw_comment_del();
"""


@dataclass(frozen=True)
class Contender:
    """One way of keeping (or not keeping) the read model; `after_write` runs after each write."""

    name: str
    description: str
    mode: str | None = None

    def setup(self, conn: psycopg.Connection) -> None:
        if self.name == "handwritten":
            conn.execute(HANDWRITTEN_SQL)
        elif self.name == "matview":
            conn.execute(f"CREATE MATERIALIZED VIEW tv_post AS {TV_POST_SQL}")
            conn.execute("CREATE UNIQUE INDEX ON tv_post (pk_post)")
        elif self.name.startswith("pg_tviews"):
            catalog.install(conn)
            engine.create(conn, "tv_post", TV_POST_SQL, mode=self.mode or "immediate")
        conn.execute("VACUUM ANALYZE")

    @property
    def after_write(self) -> str | None:
        return "REFRESH MATERIALIZED VIEW tv_post" if self.name == "matview" else None


PLAIN = Contender("plain", "the write alone, no read model")
HANDWRITTEN = Contender("handwritten", "hand-written statement triggers (ceiling; not exact under concurrency)")
MATVIEW = Contender("matview", "write + REFRESH MATERIALIZED VIEW")


def tviews_contender(mode: str = "immediate") -> Contender:
    name = "pg_tviews" if mode == "immediate" else f"pg_tviews ({mode})"
    return Contender(name, f"pg_tviews, {mode} mode", mode)
