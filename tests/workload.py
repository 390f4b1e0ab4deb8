"""A random-write workload over a small blog schema with a cascade of TVIEWs.

Used by the property test (one session, savepoints, rollbacks) and the concurrency stress test
(several sessions on overlapping rows). Every write is legal under the schema's constraints or is
expected to fail as a whole statement (the caller rolls back to a savepoint then).
"""

from __future__ import annotations

import random

import psycopg

from pg_tviews import engine

SCHEMA = """
CREATE TABLE tb_user (pk_user bigint PRIMARY KEY, name text NOT NULL, karma int NOT NULL DEFAULT 0,
                      last_seen timestamptz);
CREATE TABLE tb_post (pk_post bigint PRIMARY KEY, fk_user bigint REFERENCES tb_user ON DELETE SET NULL,
                      title text NOT NULL, views int NOT NULL DEFAULT 0);
CREATE INDEX ON tb_post (fk_user);
CREATE TABLE tb_comment (pk_comment bigint PRIMARY KEY,
                         fk_post bigint NOT NULL REFERENCES tb_post ON DELETE CASCADE,
                         fk_user bigint REFERENCES tb_user ON DELETE SET NULL, body text NOT NULL);
CREATE INDEX ON tb_comment (fk_post);
CREATE INDEX ON tb_comment (fk_user);
CREATE TABLE tb_like (fk_user bigint NOT NULL REFERENCES tb_user ON DELETE CASCADE,
                      fk_post bigint NOT NULL REFERENCES tb_post ON DELETE CASCADE,
                      PRIMARY KEY (fk_user, fk_post));
CREATE INDEX ON tb_like (fk_post);
"""

TV_POST = """
SELECT p.pk_post, p.fk_user,
       jsonb_build_object(
           'title', p.title,
           'author', CASE WHEN u.pk_user IS NULL THEN NULL
                          ELSE jsonb_build_object('name', u.name, 'karma', u.karma) END,
           'likes', (SELECT count(*) FROM tb_like l WHERE l.fk_post = p.pk_post),
           'comments', COALESCE((SELECT jsonb_agg(jsonb_build_object('body', c.body, 'by', cu.name)
                                                  ORDER BY c.pk_comment)
                                   FROM tb_comment c LEFT JOIN tb_user cu ON cu.pk_user = c.fk_user
                                  WHERE c.fk_post = p.pk_post), '[]'::jsonb)) AS data
  FROM tb_post p LEFT JOIN tb_user u ON u.pk_user = p.fk_user"""

TV_USER = """
SELECT u.pk_user, u.name,
       (SELECT count(*) FROM tb_post p WHERE p.fk_user = u.pk_user) AS posts,
       EXISTS (SELECT 1 FROM tb_comment c WHERE c.fk_user = u.pk_user) AS commented
  FROM tb_user u"""

# a cascade: reads the two TVIEWs above
TV_FEED = """
SELECT p.pk_post, p.data -> 'title' AS title, u.name AS author, u.posts AS author_posts
  FROM tv_post p LEFT JOIN tv_user u ON u.pk_user = p.fk_user"""

TVIEWS = ("tv_post", "tv_user", "tv_feed")


def setup(conn: psycopg.Connection, mode: str = "immediate", users: int = 12, posts: int = 30) -> None:
    conn.execute(SCHEMA)
    conn.execute("INSERT INTO tb_user (pk_user, name) SELECT g, 'user ' || g FROM generate_series(1, %s) g", (users,))
    conn.execute("INSERT INTO tb_post (pk_post, fk_user, title) SELECT g, 1 + g %% %s, 'post ' || g"
                 " FROM generate_series(1, %s) g", (users, posts))
    conn.execute("INSERT INTO tb_comment (pk_comment, fk_post, fk_user, body)"
                 " SELECT g, 1 + g %% %s, 1 + (g * 7) %% %s, 'comment ' || g FROM generate_series(1, %s) g",
                 (posts, users, posts * 2))
    engine.create(conn, "tv_post", TV_POST, mode=mode)
    engine.create(conn, "tv_user", TV_USER, mode=mode)
    engine.create(conn, "tv_feed", TV_FEED, mode=mode)


class Writer:
    """Random writes with ids from a shared space, so that concurrent writers overlap."""

    def __init__(self, rng: random.Random, users: int = 12, posts: int = 30, id_base: int = 1000):
        self.rng = rng
        self.users = users
        self.posts = posts
        self.next_id = id_base

    def fresh_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def user(self) -> int:
        return self.rng.randint(1, self.users)

    def post(self) -> int:
        return self.rng.randint(1, self.posts)

    def statement(self) -> tuple[str, tuple]:
        r = self.rng
        choice = r.randrange(15)
        if choice == 0:
            return "UPDATE tb_user SET name = %s WHERE pk_user = %s", (f"name {r.randrange(1000)}", self.user())
        if choice == 1:
            return "UPDATE tb_user SET karma = karma + 1 WHERE pk_user = %s", (self.user(),)
        if choice == 2:
            return "UPDATE tb_user SET last_seen = now() WHERE pk_user = %s", (self.user(),)  # unread column
        if choice == 3:
            return "UPDATE tb_post SET title = %s WHERE pk_post = %s", (f"title {r.randrange(1000)}", self.post())
        if choice == 4:
            return "UPDATE tb_post SET fk_user = %s WHERE pk_post = %s", (
                None if r.random() < 0.2 else self.user(), self.post())
        if choice == 5:
            return "INSERT INTO tb_post (pk_post, fk_user, title) VALUES (%s, %s, %s)", (
                self.fresh_id(), self.user(), "new post")
        if choice == 6:
            return "INSERT INTO tb_comment (pk_comment, fk_post, fk_user, body) VALUES (%s, %s, %s, %s)", (
                self.fresh_id(), self.post(), self.user(), f"hello {r.randrange(100)}")
        if choice == 7:
            return "UPDATE tb_comment SET fk_post = %s WHERE pk_comment = (SELECT min(pk_comment) FROM tb_comment" \
                   " WHERE fk_post = %s)", (self.post(), self.post())
        if choice == 8:
            return "UPDATE tb_comment SET body = body || '!' WHERE fk_post = %s", (self.post(),)
        if choice == 9:
            return "DELETE FROM tb_comment WHERE pk_comment = (SELECT max(pk_comment) FROM tb_comment" \
                   " WHERE fk_post = %s)", (self.post(),)
        if choice == 10:
            return "INSERT INTO tb_like (fk_user, fk_post) VALUES (%s, %s) ON CONFLICT DO NOTHING", (
                self.user(), self.post())
        if choice == 11:
            return "DELETE FROM tb_like WHERE fk_post = %s", (self.post(),)
        if choice == 12:
            return "DELETE FROM tb_post WHERE pk_post = %s AND pk_post > %s", (
                r.randint(self.posts + 1, self.next_id + 1), self.posts)
        if choice == 13:
            return "UPDATE tb_comment SET fk_user = %s WHERE fk_post = %s", (
                None if r.random() < 0.3 else self.user(), self.post())
        return "UPDATE tb_post SET views = views + 1 WHERE pk_post = %s", (self.post(),)  # unread column
