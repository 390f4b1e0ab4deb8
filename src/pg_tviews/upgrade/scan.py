"""`pg-tviews scan-code`: uses of SQL API that changed between catalog versions, in application
code and SQL files, with file:line and the replacement."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", ".venv", "venv", "__pycache__", ".tox", ".mypy_cache",
             "dist", "build", ".pg_tviews"}


@dataclass(frozen=True)
class ApiChange:
    name: str
    since: str
    change: str  # "deprecated" (works with a WARNING) or "removed"
    replacement: str


API_CHANGES = (
    ApiChange("pg_tviews_refresh_one", "0.2.0", "deprecated",
              "pg_tviews_refresh(tview_name => ..., primary_keys => ARRAY[pk])"),
    ApiChange("pg_tviews_refresh_batch", "0.2.0", "deprecated",
              "pg_tviews_refresh(tview_name => ..., primary_keys => pks)"),
    ApiChange("pg_tviews_refresh_all", "0.2.0", "deprecated", "pg_tviews_refresh(tview_name => ...)"),
)


@dataclass
class Use:
    file: str
    line: int
    column: int
    name: str
    since: str
    change: str
    replacement: str
    text: str

    def as_dict(self) -> dict:
        return asdict(self)


def _files(paths: list[str]):
    for path in map(Path, paths):
        if path.is_file():
            yield path
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            for name in sorted(files):
                yield Path(root) / name


def scan(paths: list[str]) -> list[Use]:
    pattern = re.compile(r"\b(" + "|".join(re.escape(c.name) for c in API_CHANGES) + r")\b")
    changes = {c.name: c for c in API_CHANGES}
    uses = []
    for path in _files(paths):
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary or unreadable: not code
        for number, line in enumerate(text.splitlines(), 1):
            for match in pattern.finditer(line):
                c = changes[match.group(1)]
                uses.append(Use(str(path), number, match.start() + 1, c.name, c.since, c.change, c.replacement,
                                line.strip()))
    return uses
