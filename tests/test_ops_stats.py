"""Refresh statistics: exact under concurrent writers, folded by concurrent rollups, errors kept."""

from __future__ import annotations

import json
import threading

import psycopg
import pytest

import workload
from pg_tviews import engine, worker
from pg_tviews.ops import stats
from test_ops_health import cli

WRITERS = 8
WRITES = 25  # transactions per writer
ITEMS = 10  # items per writer

SCHEMA = f"""
CREATE TABLE tb_owner (pk_owner bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE tb_item (pk_item bigint PRIMARY KEY, fk_owner bigint NOT NULL REFERENCES tb_owner, val int NOT NULL);
CREATE INDEX ON tb_item (fk_owner);
INSERT INTO tb_owner SELECT g, 'owner ' || g FROM generate_series(1, {WRITERS}) g;
INSERT INTO tb_item SELECT o * 1000 + i, o, 0 FROM generate_series(1, {WRITERS}) o, generate_series(1, {ITEMS}) i;
"""
TV_ITEM = "SELECT i.pk_item, i.val, o.name FROM tb_item i JOIN tb_owner o ON o.pk_owner = i.fk_owner"
TV_OWNER = ("SELECT o.pk_owner, (SELECT coalesce(sum(i.val), 0) FROM tb_item i WHERE i.fk_owner = o.pk_owner)"
            " AS total FROM tb_owner o")


def setup_items(conn: psycopg.Connection, mode: str) -> None:
    conn.execute(SCHEMA)
    engine.create(conn, "tv_item", TV_ITEM, mode=mode)
    engine.create(conn, "tv_owner", TV_OWNER, mode=mode)


def by_name(conn: psycopg.Connection, fold: bool = True) -> dict[str, stats.TViewStats]:
    return {s.tview: s for s in stats.collect(conn, fold=fold)}


def writer(dsn: str, owner: int, failures: list) -> None:
    """WRITES transactions, each changing one row of tv_item and one of tv_owner (own rows only)."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for n in range(WRITES):
                conn.execute("UPDATE tb_item SET val = val + 1 WHERE pk_item = %s", (owner * 1000 + 1 + n % ITEMS,))
    except Exception as exc:  # reported by the test
        failures.append(exc)


def roller(dsn: str, stop: threading.Event, folded: list[int], failures: list) -> None:
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                folded.append(stats.rollup(conn))
    except Exception as exc:
        failures.append(exc)


@pytest.mark.parametrize("mode", ["immediate", "deferred"])
def test_counts_add_up_under_concurrent_writers_and_rollups(pg, tvconn, mode):
    setup_items(tvconn, mode)
    before = by_name(tvconn)
    dsn = tvconn.info.dsn
    failures: list = []
    folded: list[int] = []
    stop = threading.Event()
    rollups = [threading.Thread(target=roller, args=(dsn, stop, folded, failures)) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(dsn, owner, failures)) for owner in range(1, WRITERS + 1)]
    for thread in rollups + writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
    stop.set()
    for thread in rollups:
        thread.join(timeout=60)
    assert not failures, failures

    pending = tvconn.execute("SELECT count(*) FROM tviews.refresh_event").fetchone()[0]
    unfolded = by_name(tvconn, fold=False)  # the view adds events not folded yet
    after = by_name(tvconn)
    assert tvconn.execute("SELECT count(*) FROM tviews.refresh_event").fetchone()[0] == 0
    assert sum(folded) + pending == 2 * WRITERS * WRITES  # every event folded exactly once
    for name in ("public.tv_item", "public.tv_owner"):
        assert after[name].refresh_count - before[name].refresh_count == WRITERS * WRITES
        assert after[name].rows_changed - before[name].rows_changed == WRITERS * WRITES
        assert after[name].error_count == 0 and after[name].last_error is None
        assert after[name].total_ms > 0 and after[name].last_refreshed is not None
        assert (unfolded[name].refresh_count, unfolded[name].rows_changed) == (
            after[name].refresh_count, after[name].rows_changed)


@pytest.mark.majors("newest")
def test_explicit_refreshes_count_and_cli(pg, tvconn, capsys):
    setup_items(tvconn, "immediate")
    tvconn.execute("UPDATE tb_item SET val = 5 WHERE pk_item = 1001")
    engine.refresh(tvconn, "tv_item")  # nothing differs: counted, no rows changed
    engine.refresh(tvconn, "tv_item", [1001, 1002])
    s = by_name(tvconn, fold=False)["public.tv_item"]
    assert (s.refresh_count, s.rows_changed) == (3, 1)
    assert tvconn.execute("SELECT count(*) FROM tviews.refresh_event").fetchone()[0] > 0

    code, out, err = cli(capsys, "--json", "--dsn", tvconn.info.dsn, "stats", "tv_item", "--no-rollup")
    assert code == 0, err
    data = json.loads(out)
    assert [d["tview"] for d in data] == ["public.tv_item"]
    assert data[0]["refresh_count"] == 3 and data[0]["rows_changed"] == 1 and data[0]["mean_ms"] > 0
    assert tvconn.execute("SELECT count(*) FROM tviews.refresh_event").fetchone()[0] > 0  # --no-rollup

    code, out, err = cli(capsys, "--dsn", tvconn.info.dsn, "stats")
    assert code == 0, err
    assert "public.tv_item" in out and "public.tv_owner" in out
    assert tvconn.execute("SELECT count(*) FROM tviews.refresh_event").fetchone()[0] == 0

    assert cli(capsys, "--dsn", tvconn.info.dsn, "stats", "tv_nope")[0] == 2


@pytest.mark.majors("newest")
def test_worker_errors_are_counted_with_the_last_message(pg, tvconn, capsys):
    workload.setup(tvconn, "async")
    tvconn.execute("CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN RAISE EXCEPTION 'refresh refused'; END $$")
    tvconn.execute("CREATE TRIGGER boom BEFORE UPDATE ON tv_user FOR EACH ROW EXECUTE FUNCTION boom()")
    tvconn.execute("UPDATE tb_user SET name = 'x' WHERE pk_user = 1")
    worker.drain(tvconn)
    s = by_name(tvconn)["public.tv_user"]
    assert s.error_count == 1 and "refresh refused" in s.last_error and s.last_error_at is not None
    code, out, _err = cli(capsys, "--dsn", tvconn.info.dsn, "stats")
    assert code == 0 and "refresh refused" in out
