"""Property test: random write transactions (with savepoints and rollbacks) keep every TVIEW exact.

Seeded: a failure names its seed; rerun one with PG_TVIEWS_SEED=<seed>.
"""

from __future__ import annotations

import os
import random

import psycopg
import pytest

import workload
from oracle import assert_exact

SEEDS = [int(os.environ["PG_TVIEWS_SEED"])] if os.environ.get("PG_TVIEWS_SEED") else [11, 2024, 77777]


def run_transaction(conn: psycopg.Connection, writer: workload.Writer, rng: random.Random) -> str:
    """One random transaction; returns how it ended."""
    ending = rng.choices(["commit", "savepoint", "rollback"], weights=[6, 3, 1])[0]
    conn.execute("BEGIN")
    for _ in range(rng.randint(1, 4)):
        conn.execute(*writer.statement())
    if ending == "savepoint":
        conn.execute("SAVEPOINT s")
        for _ in range(rng.randint(1, 3)):
            conn.execute(*writer.statement())
        if rng.random() < 0.7:
            conn.execute("ROLLBACK TO SAVEPOINT s")
        for _ in range(rng.randint(0, 2)):
            conn.execute(*writer.statement())
    conn.execute("ROLLBACK" if ending == "rollback" else "COMMIT")
    return ending


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mode", ["immediate", "deferred"])
def test_random_transactions_keep_tviews_exact(tvconn, seed, mode):
    workload.setup(tvconn, mode)
    rng = random.Random(seed)
    writer = workload.Writer(rng)
    assert_exact(tvconn, *workload.TVIEWS, context=f"(seed {seed}) after creation")
    for number in range(60):
        ending = run_transaction(tvconn, writer, rng)
        assert_exact(tvconn, *workload.TVIEWS, context=f"(seed {seed}, {mode}) after transaction {number} ({ending})")


@pytest.mark.majors("newest")
def test_read_your_writes_inside_a_transaction_with_savepoints(pg, tvconn):
    workload.setup(tvconn)
    tvconn.execute("BEGIN")
    tvconn.execute("UPDATE tb_user SET name = 'renamed' WHERE pk_user = 1")
    assert tvconn.execute("SELECT author FROM tv_feed WHERE pk_post = 12").fetchone()[0] == "renamed"
    tvconn.execute("SAVEPOINT s")
    tvconn.execute("UPDATE tb_user SET name = 'again' WHERE pk_user = 1")
    assert tvconn.execute("SELECT author FROM tv_feed WHERE pk_post = 12").fetchone()[0] == "again"
    tvconn.execute("ROLLBACK TO SAVEPOINT s")
    assert tvconn.execute("SELECT author FROM tv_feed WHERE pk_post = 12").fetchone()[0] == "renamed"
    tvconn.execute("COMMIT")
    assert tvconn.execute("SELECT author FROM tv_feed WHERE pk_post = 12").fetchone()[0] == "renamed"
    assert_exact(tvconn, *workload.TVIEWS)
