"""The blog schema used by the benchmarks, the quickstart demo and many tests.

tb_user / tb_post / tb_comment and the read model tv_post: a post with its author as a nested
object and its comments as an ordered array.
"""

from __future__ import annotations

SCHEMA_SQL = """
CREATE TABLE tb_user (
    pk_user    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    name       text NOT NULL,
    email      text,
    last_login timestamptz
);
CREATE TABLE tb_post (
    pk_post    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    fk_user    bigint NOT NULL REFERENCES tb_user,
    title      text NOT NULL,
    body       text,
    views      bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tb_post_fk_user_idx ON tb_post (fk_user);
CREATE TABLE tb_comment (
    pk_comment bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    fk_post    bigint NOT NULL REFERENCES tb_post,
    fk_user    bigint NOT NULL REFERENCES tb_user,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tb_comment_fk_post_idx ON tb_comment (fk_post);
CREATE INDEX tb_comment_fk_user_idx ON tb_comment (fk_user);
"""

# User 1 is the "prolific" author: the first `prolific` posts are hers. Run one by one with
# parameters users, posts, comments, prolific.
DATA_SQL = [
    """INSERT INTO tb_user (name, email)
       SELECT 'user ' || g, 'user' || g || '@example.com' FROM generate_series(1, %(users)s) g""",
    """INSERT INTO tb_post (fk_user, title, body)
       SELECT CASE WHEN g <= %(prolific)s THEN 1 ELSE 2 + g %% (%(users)s - 1) END,
              'post ' || g, repeat('lorem ipsum ', 8)
         FROM generate_series(1, %(posts)s) g""",
    """INSERT INTO tb_comment (fk_post, fk_user, body)
       SELECT 1 + (g::bigint * 7919) %% %(posts)s, 1 + (g::bigint * 104729) %% %(users)s, 'comment ' || g
         FROM generate_series(1, %(comments)s) g""",
]


def load_data(conn, *, users: int, posts: int, comments: int, prolific: int) -> None:
    """Generate the blog data set (deterministic) and analyze it."""
    params = {"users": users, "posts": posts, "comments": comments, "prolific": prolific}
    for statement in DATA_SQL:
        conn.execute(statement, params)
    conn.execute("ANALYZE")

TV_POST_SQL = """SELECT p.pk_post, p.id, p.fk_user,
       jsonb_build_object(
           'id', p.id,
           'title', p.title,
           'author', jsonb_build_object('id', u.id, 'name', u.name),
           'comments', COALESCE((SELECT jsonb_agg(jsonb_build_object('id', c.id, 'body', c.body)
                                                  ORDER BY c.pk_comment)
                                   FROM tb_comment c
                                  WHERE c.fk_post = p.pk_post), '[]'::jsonb)) AS data
  FROM tb_post p
  JOIN tb_user u ON u.pk_user = p.fk_user"""

TV_USER_SQL = """SELECT u.pk_user, u.id,
       jsonb_build_object('id', u.id, 'name', u.name, 'email', u.email,
           'posts', COALESCE((SELECT jsonb_agg(jsonb_build_object('id', p.id, 'title', p.title)
                                               ORDER BY p.pk_post)
                                FROM tb_post p WHERE p.fk_user = u.pk_user), '[]'::jsonb)) AS data
  FROM tb_user u"""
