"""`pg-tviews verify [--repair]`: exact drift per TVIEW, found range by range, and repaired."""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg import sql

import workload
from oracle import assert_exact
from pg_tviews import engine
from pg_tviews.errors import CheckFailed
from pg_tviews.ops import verify
from test_ops_health import cli


def behind_the_triggers(conn: psycopg.Connection, *statements: str) -> None:
    """Write without firing any trigger (as logical replication would): the TVIEWs drift."""
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        for statement in statements:
            conn.execute(statement)


def inject(conn: psycopg.Connection) -> dict[str, set[int]]:
    """Drift of tv_post by kind: a new post (missing), a deleted one (extra), a renamed author (different)."""
    conn.execute("INSERT INTO tb_post (pk_post, fk_user, title) VALUES (500, 2, 'doomed')")  # maintained
    renamed = {r[0] for r in conn.execute(  # posts that show user 3's name: as author or commenter
        "SELECT pk_post FROM tb_post WHERE fk_user = 3"
        " UNION SELECT fk_post FROM tb_comment WHERE fk_user = 3")}
    behind_the_triggers(
        conn,
        "INSERT INTO tb_post (pk_post, fk_user, title) VALUES (400, 1, 'unseen')",
        "DELETE FROM tb_post WHERE pk_post = 500",
        "UPDATE tb_user SET name = 'renamed' WHERE pk_user = 3",
        "UPDATE tb_post SET title = 'retitled' WHERE pk_post = 7",
    )
    return {"missing": {400}, "extra": {500}, "different": renamed | {7}}


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_finds_exactly_the_injected_drift_and_repairs_it(pg, tvconn, chunk):
    workload.setup(tvconn)
    expected = inject(tvconn)
    progress: list[tuple[str, int, int]] = []
    [drift] = verify.verify(tvconn, "tv_post", chunk=chunk, examples=100, progress=lambda *p: progress.append(p))
    assert {k: set(v) for k, v in drift.examples.items()} == expected
    assert drift.counts == {k: len(v) for k, v in expected.items()} and not drift.exact
    assert drift.rows == 31 and drift.repaired_rows is None
    assert progress[-1] == ("public.tv_post", 31, 31)
    assert len(progress) == 31 // chunk + 1  # full ranges, then the open-ended last one
    with pytest.raises(CheckFailed):
        verify.require_exact([drift])

    drifts = verify.verify(tvconn, repair=True, chunk=chunk)  # every TVIEW, in dependency order
    assert [d.tview for d in drifts] == ["public.tv_post", "public.tv_user", "public.tv_feed"]
    post, user, feed = drifts
    assert post.drifted == sum(map(len, expected.values())) and post.repaired_rows == post.drifted
    assert user.examples["different"] == [1, 2, 3]  # post counts of 1 and 2, the name of 3
    assert feed.drifted == 0  # repairing tv_post and tv_user cascaded into it
    assert all(d.exact and d.remaining == 0 for d in drifts)
    verify.require_exact(drifts)
    assert_exact(tvconn, *workload.TVIEWS)
    assert all(d.exact for d in verify.verify(tvconn))


def test_cli_reports_drift_and_exit_codes(pg, tvconn, capsys):
    workload.setup(tvconn)
    dsn = tvconn.info.dsn
    assert cli(capsys, "--dsn", dsn, "verify")[0] == 0
    inject(tvconn)

    code, out, err = cli(capsys, "--json", "--dsn", dsn, "verify", "tv_post", "--examples", "2")
    assert code == 1 and "verify --repair" in err
    [data] = json.loads(out)
    assert data["counts"] == {"missing": 1, "extra": 1, "different": data["drifted"] - 2}
    assert data["examples"]["missing"] == [400] and len(data["examples"]["different"]) == 2

    code, out, err = cli(capsys, "--dsn", dsn, "verify", "--chunk", "5")
    assert code == 1 and "drifted" in out and "400" in out and "500" in out

    code, out, err = cli(capsys, "--dsn", dsn, "verify", "--repair", "--chunk", "5")
    assert code == 0, err
    assert "repaired" in out and "0 left" in out
    assert_exact(tvconn, *workload.TVIEWS)
    assert cli(capsys, "--dsn", dsn, "verify", "--chunk", "0")[0] == 2


@pytest.mark.majors("newest")
def test_async_backlog_is_reported_with_the_drift(pg, tvconn):
    workload.setup(tvconn, "async")
    tvconn.execute("UPDATE tb_post SET title = 'queued' WHERE pk_post = 3")
    [drift] = verify.verify(tvconn, "tv_post")
    assert drift.examples["different"] == [3] and drift.pending == 1


@pytest.mark.majors("newest")
def test_quoted_names_and_a_large_tview_in_chunks(pg, tvconn):
    schema = sql.Identifier("Read Side")
    tvconn.execute(sql.SQL("CREATE SCHEMA {s}; CREATE TABLE {s}.{t} ({k} int PRIMARY KEY, {v} text);"
                           " INSERT INTO {s}.{t} SELECT g, 'v' || g FROM generate_series(1, 20000) g").format(
        s=schema, t=sql.Identifier("Item Table"), k=sql.Identifier("PK"), v=sql.Identifier("Value ")))
    name = sql.Identifier("Read Side", "TV Item").as_string(tvconn)
    engine.create(tvconn, name, 'SELECT i."PK" AS pk_item, i."Value " AS "V" FROM "Read Side"."Item Table" i')
    behind_the_triggers(tvconn, 'UPDATE "Read Side"."Item Table" SET "Value " = \'x\' WHERE "PK" % 1000 = 0',
                        'DELETE FROM "Read Side"."Item Table" WHERE "PK" = 19999')
    [drift] = verify.verify(tvconn, name, chunk=3000, repair=True)
    assert drift.counts == {"missing": 0, "extra": 1, "different": 20} and drift.remaining == 0
    assert drift.examples["different"] == [1000, 2000, 3000, 4000, 5000]
    assert_exact(tvconn, '"Read Side"."TV Item"')
