"""A corpus of real-world definitions (tests/corpus/*.sql): ORM-generated queries and CQRS read
models, supported and not, over one application schema.

Each file starts with comment lines: what it is, `-- expect: ok` or `-- expect: rejected <construct>`,
and optionally `-- key: <column>`. A supported definition becomes a TVIEW that equals its definition
after every write of tests/corpus/writes.sql and whose drop removes everything; a rejected one
raises DefinitionError naming the construct and leaves nothing behind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from oracle import assert_exact
from pg_tviews import engine
from pg_tviews.errors import DefinitionError
from test_fuzz_analyzer import snapshot, write

CORPUS = Path(__file__).parent / "corpus"
HEADER = re.compile(r"^-- (expect|key): (.*)$", re.MULTILINE)


@dataclass
class Case:
    name: str
    sql: str
    rejected: str | None  # the construct named by the rejection, None when supported
    key: str | None


def load(path: Path) -> Case:
    text = path.read_text()
    headers = dict(HEADER.findall(text))
    expect = headers["expect"].strip()
    rejected = expect.removeprefix("rejected").strip() if expect.startswith("rejected") else None
    assert expect == "ok" or rejected, f"{path.name}: expect ok or rejected <construct>"
    return Case(path.stem, text, rejected, headers.get("key"))


CASES = [load(p) for p in sorted(CORPUS.glob("[0-9]*.sql"))]
WRITES = [line for line in (CORPUS / "writes.sql").read_text().splitlines() if line and not line.startswith("--")]


@pytest.fixture
def app(tvconn):
    tvconn.execute((CORPUS / "schema.sql").read_text())
    return tvconn


def test_corpus_is_varied():
    assert len(CASES) >= 40
    assert sum(c.rejected is None for c in CASES) >= 20 and sum(c.rejected is not None for c in CASES) >= 15


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_definition(app, case):
    before = snapshot(app)
    if case.rejected is not None:
        with pytest.raises(DefinitionError) as info:
            engine.create(app, f"tv_{case.name}", case.sql, key=case.key)
        assert info.value.construct == case.rejected, info.value
        assert info.value.message and info.value.line is not None or case.rejected == "standard_conforming_strings"
        assert snapshot(app) == before, "a rejected definition left objects behind"
        return
    tview = engine.create(app, f"tv_{case.name}", case.sql, key=case.key)
    assert app.execute(f"SELECT count(*) FROM {tview.table}").fetchone()[0] > 0
    assert_exact(app, tview.table, context="after creation")
    for statement in WRITES:
        assert write(app, tview, statement), statement
        assert_exact(app, tview.table, context=f"after {statement!r}")
    engine.drop(app, tview.name)
    assert snapshot(app) == before, "drop did not remove everything creation made"
