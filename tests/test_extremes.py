"""Extremes: a celebrity fan-out (one source row feeding 100,000 TVIEW rows), 2 MB JSONB documents,
arrays of 10,000 children, and 100 TVIEWs on one source table. Each stays exact (the oracle) and
the fan-out runs in bounded backend memory.

Figures (durations, peak memory, write latency) are printed, not asserted: speed is measured by
benchmarks, never asserted by tests. `pytest tests/test_extremes.py -s` shows them; docs/limits.md
records a run.
"""

from __future__ import annotations

import statistics
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from oracle import assert_exact
from pg_tviews import engine

pytestmark = [pytest.mark.slow, pytest.mark.majors("newest")]


def report(what: str, **figures: float | int | str) -> None:
    """Print one line of measured figures (shown with pytest -s)."""
    print(f"\n[extremes] {what}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


class MemoryWatch:
    """Samples the private (anonymous) resident memory of a backend from /proc while it works:
    shared buffers are excluded, so this is what the statement itself allocates."""

    def __init__(self, pid: int):
        self.status = Path(f"/proc/{pid}/status")
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def anon_kb(self) -> int:
        for line in self.status.read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
        raise RuntimeError("no RssAnon in /proc status")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self.anon_kb())
            time.sleep(0.002)

    def __enter__(self) -> MemoryWatch:
        self.baseline_kb = self.anon_kb()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def timed():
    result = {}
    started = time.perf_counter()
    yield result
    result["seconds"] = round(time.perf_counter() - started, 3)


FAN_OUT = 100_000

CELEBRITY = f"""
CREATE TABLE tb_user (pk_user bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE tb_post (pk_post bigint PRIMARY KEY, fk_user bigint NOT NULL REFERENCES tb_user, title text NOT NULL);
CREATE INDEX ON tb_post (fk_user);
INSERT INTO tb_user VALUES (1, 'celebrity'), (2, 'someone else');
INSERT INTO tb_post SELECT g, CASE WHEN g <= {FAN_OUT} THEN 1 ELSE 2 END, 'post ' || g
  FROM generate_series(1, {FAN_OUT} + 10) g;
ANALYZE tb_user, tb_post;
"""

TV_POST = """SELECT p.pk_post, p.fk_user,
       jsonb_build_object('title', p.title, 'author', jsonb_build_object('id', u.pk_user, 'name', u.name)) AS data
  FROM tb_post p JOIN tb_user u ON u.pk_user = p.fk_user"""


@pytest.mark.parametrize("mode", ["immediate", "deferred"])
def test_celebrity_rename_refreshes_100k_rows_in_bounded_memory(pg, tvconn, mode):
    tvconn.execute(CELEBRITY)
    with timed() as creation:
        engine.create(tvconn, "tv_post", TV_POST, mode=mode)
    with MemoryWatch(tvconn.info.backend_pid) as memory, timed() as rename:
        tvconn.execute("UPDATE tb_user SET name = 'renamed celebrity' WHERE pk_user = 1")
    renamed = tvconn.execute("SELECT count(*) FROM tv_post WHERE data -> 'author' ->> 'name' = 'renamed celebrity'")
    assert renamed.fetchone()[0] == FAN_OUT
    with timed() as unrelated:  # a write of the other user touches 10 rows, not the 100,000
        tvconn.execute("UPDATE tb_user SET name = 'someone' WHERE pk_user = 2")
    assert_exact(tvconn, "tv_post")
    growth_mb = round((memory.peak_kb - memory.baseline_kb) / 1024, 1)
    report(f"celebrity fan-out of {FAN_OUT} rows ({mode}, PostgreSQL {pg.major})",
           create_s=creation["seconds"], rename_s=rename["seconds"], other_user_rename_s=unrelated["seconds"],
           backend_private_memory_growth_mb=growth_mb, work_mem=tvconn.execute("SHOW work_mem").fetchone()[0])
    # measured 50-80 MB (a few hundred bytes per affected row: key arrays and their hash tables); the bound
    # catches a maintenance that would start holding whole documents per row
    assert growth_mb < 160, growth_mb


def test_two_megabyte_documents(pg, tvconn):
    """Documents of about 2 MB (one large text value and 2,000 children of 1 kB) are rebuilt and
    compared whole on every write of any of their parts."""
    tvconn.execute("""
        CREATE TABLE tb_doc (pk_doc bigint PRIMARY KEY, title text NOT NULL, body text NOT NULL);
        CREATE TABLE tb_part (pk_part bigint PRIMARY KEY, fk_doc bigint NOT NULL REFERENCES tb_doc, content text);
        CREATE INDEX ON tb_part (fk_doc);
        INSERT INTO tb_doc SELECT g, 'doc ' || g, repeat(md5(g::text), 65536) FROM generate_series(1, 4) g;
        INSERT INTO tb_part SELECT g, 1 + g % 4, repeat(chr(65 + g % 26), 1000) FROM generate_series(1, 8000) g;
    """)
    engine.create(tvconn, "tv_doc", """
        SELECT d.pk_doc,
               jsonb_build_object('title', d.title, 'body', d.body,
                                  'parts', (SELECT jsonb_agg(jsonb_build_object('id', p.pk_part, 'content', p.content)
                                                             ORDER BY p.pk_part)
                                              FROM tb_part p WHERE p.fk_doc = d.pk_doc)) AS data
          FROM tb_doc d""")
    sizes = tvconn.execute("SELECT min(pg_column_size(data)), max(octet_length(data::text)) FROM tv_doc").fetchone()
    assert sizes[1] > 4_000_000  # 2 MB of body and 2 MB of parts as text
    latencies = {}
    for label, statement in (("update the title", "UPDATE tb_doc SET title = 'new title' WHERE pk_doc = 1"),
                             ("update one part", "UPDATE tb_part SET content = 'short' WHERE pk_part = 8"),
                             ("append a part", "INSERT INTO tb_part VALUES (9001, 2, 'appended')"),
                             ("replace the body", "UPDATE tb_doc SET body = repeat('z', 2000000) WHERE pk_doc = 3")):
        with timed() as took:
            tvconn.execute(statement)
        latencies[label] = took["seconds"]
    assert_exact(tvconn, "tv_doc")
    assert tvconn.execute("SELECT data ->> 'title' FROM tv_doc WHERE pk_doc = 1").fetchone()[0] == "new title"
    report(f"2 MB documents (PostgreSQL {pg.major})", stored_bytes_min=sizes[0], text_bytes_max=sizes[1],
           **{k.replace(" ", "_") + "_s": v for k, v in latencies.items()})


def test_arrays_of_10k_children(pg, tvconn, tvdb, connect):
    """An order with 10,000 lines kept as one array: each write of a line rebuilds the array."""
    tvconn.execute("""
        CREATE TABLE tb_order (pk_order bigint PRIMARY KEY, status text NOT NULL);
        CREATE TABLE tb_line (pk_line bigint PRIMARY KEY, fk_order bigint NOT NULL REFERENCES tb_order,
                              sku text NOT NULL, quantity int NOT NULL);
        CREATE INDEX ON tb_line (fk_order);
        INSERT INTO tb_order VALUES (1, 'new'), (2, 'new');
        INSERT INTO tb_line SELECT g, CASE WHEN g <= 10000 THEN 1 ELSE 2 END, 'sku-' || g, 1 + g % 5
          FROM generate_series(1, 10010) g;
    """)
    engine.create(tvconn, "tv_order", """
        SELECT o.pk_order, o.status,
               (SELECT count(*) FROM tb_line l WHERE l.fk_order = o.pk_order) AS line_count,
               (SELECT jsonb_agg(jsonb_build_object('sku', l.sku, 'quantity', l.quantity) ORDER BY l.pk_line)
                  FROM tb_line l WHERE l.fk_order = o.pk_order) AS lines
          FROM tb_order o""")
    assert tvconn.execute("SELECT jsonb_array_length(lines) FROM tv_order WHERE pk_order = 1").fetchone()[0] == 10000
    bulk = "UPDATE tb_line SET quantity = quantity + 1 WHERE fk_order = 1"
    with timed() as bulk_first:  # the session's first write: its maintenance is planned for 10,000 rows
        connect(tvdb).execute(bulk)
    session = connect(tvdb)
    single = []
    for n in range(20):
        with timed() as took:
            session.execute("UPDATE tb_line SET quantity = quantity + 1 WHERE pk_line = %s", (1 + n * 397,))
        single.append(took["seconds"])
    with timed() as bulk_later:  # the same statement after one-row writes in the same session
        session.execute(bulk)
    with timed() as deleted:
        session.execute("DELETE FROM tb_line WHERE fk_order = 1 AND pk_line % 2 = 0")
    assert_exact(tvconn, "tv_order")
    assert tvconn.execute("SELECT line_count FROM tv_order WHERE pk_order = 1").fetchone()[0] == 5000
    report(f"array of 10,000 children (PostgreSQL {pg.major})",
           one_line_update_median_ms=round(statistics.median(single) * 1000, 1),
           update_10000_lines_first_in_session_s=bulk_first["seconds"],
           update_10000_lines_after_one_line_updates_s=bulk_later["seconds"],
           delete_5000_lines_s=deleted["seconds"])


def median_write_ms(conn: psycopg.Connection, count: int = 40) -> float:
    """Median latency of a one-row UPDATE that changes a column every TVIEW reads (autocommit: the
    commit step included)."""
    latencies = []
    for n in range(count):
        name = f"name {time.perf_counter_ns()}"
        started = time.perf_counter()
        conn.execute("UPDATE tb_item SET name = %s WHERE pk_item = %s", (name, 1 + n % 50))
        latencies.append(time.perf_counter() - started)
    return round(statistics.median(latencies) * 1000, 2)


def test_one_hundred_tviews_on_one_source(pg, tvconn):
    tvconn.execute("""
        CREATE TABLE tb_item (pk_item bigint PRIMARY KEY, name text NOT NULL, price numeric NOT NULL,
                              stock int NOT NULL, note text);
        INSERT INTO tb_item SELECT g, 'item ' || g, g * 1.5, g % 7 FROM generate_series(1, 1000) g;
    """)
    baseline = median_write_ms(tvconn)
    latency = {}
    with timed() as creation:
        for n in range(1, 101):
            engine.create(tvconn, f"tv_item_{n}", f"""
                SELECT i.pk_item, jsonb_build_object('view', {n}, 'name', i.name, 'price', i.price * {n},
                                                     'in_stock', i.stock > {n % 7}) AS data
                  FROM tb_item i""")
            if n in (1, 10, 100):
                latency[n] = median_write_ms(tvconn)
    tvconn.execute("BEGIN")
    tvconn.execute("UPDATE tb_item SET price = price + 1, stock = stock + 1 WHERE pk_item <= 100")
    tvconn.execute("INSERT INTO tb_item VALUES (5000, 'new', 1, 1)")
    tvconn.execute("DELETE FROM tb_item WHERE pk_item = 999")
    tvconn.execute("COMMIT")
    with timed() as unread:  # a column no TVIEW reads: the 100 UPDATE gates stay closed
        tvconn.execute("UPDATE tb_item SET note = 'x'")
    assert_exact(tvconn, *(f"tv_item_{n}" for n in range(1, 101)))
    report(f"100 TVIEWs on one table (PostgreSQL {pg.major})", create_100_s=creation["seconds"],
           write_ms_no_tview=baseline, write_ms_1_tview=latency[1], write_ms_10_tviews=latency[10],
           write_ms_100_tviews=latency[100], update_1000_rows_of_an_unread_column_s=unread["seconds"])
