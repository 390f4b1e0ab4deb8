"""The quickstart demo: repeatable, the read model follows every write, the database stays exact."""

from __future__ import annotations

import psycopg

from oracle import assert_exact
from pg_tviews.ops import demo


def test_demo_twice_follows_the_writes(pg):
    for _ in range(2):  # the demo database is recreated: a second run sees the same
        report = demo.run(pg.dsn(), with_bench=False)
        assert report.database == demo.DATABASE and report.bench is None
        assert report.tviews == ["public.tv_post", "public.tv_user"]
        assert report.before == {"title": "post 1", "author": "user 1", "comments": 5, "last_comment": "comment 10000"}
        documents = [(s.action, s.document["title"], s.document["author"], s.document["comments"]) for s in report.steps]
        assert documents == [
            ("rename the author", "post 1", "Ada Lovelace", 5),
            ("add a comment", "post 1", "Ada Lovelace", 6),
            ("edit the title", "Notes on the Analytical Engine", "Ada Lovelace", 6),
            ("delete the comment", "Notes on the Analytical Engine", "Ada Lovelace", 5),
        ]
        # the author's 25 posts and her tv_user row; one post; the post and the author's title list
        assert [s.rows_rewritten for s in report.steps] == [26, 1, 2, 1]
        assert report.status.health.healthy and report.status.queue.pending == 0
        assert {t.tview: t.rows for t in report.status.tviews} == {"public.tv_post": 2000, "public.tv_user": 200}
        assert any("status --watch" in c for c in report.explore)
    with psycopg.connect(report.dsn, autocommit=True) as conn:
        assert_exact(conn, "tv_post", "tv_user")
    with psycopg.connect(pg.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {demo.DATABASE}")
