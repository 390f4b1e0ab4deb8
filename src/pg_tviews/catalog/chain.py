"""The versioned migration chain: SQL files shipped as data, named like PostgreSQL extension scripts.

``pg_tviews--X.sql`` installs version X from nothing; ``pg_tviews--X--Y.sql`` moves an installed
catalog from X to Y (up or down). The same files are applied by the Python installer (plain schema
mode, for managed PostgreSQL) and installed as a real extension, so there is one source of truth.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..errors import CatalogError

SQL_DIR = Path(__file__).parent / "sql"
EXTENSION = "pg_tviews"
_NAME = re.compile(rf"^{EXTENSION}--(?P<a>[0-9][0-9.]*?)(?:--(?P<b>[0-9][0-9.]*?))?\.sql$")


def version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        raise CatalogError(f"not a version: {version!r}", hint="versions look like 0.2.0") from None


@dataclass(frozen=True)
class Script:
    """One SQL file of the chain: an install script (source None) or a step from source to target."""

    path: Path
    source: str | None
    target: str

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]

    @property
    def direction(self) -> str:
        if self.source is None:
            return "install"
        return "up" if version_key(self.target) > version_key(self.source) else "down"


@dataclass(frozen=True)
class Chain:
    installs: dict[str, Script]
    steps: dict[tuple[str, str], Script]

    @property
    def versions(self) -> list[str]:
        found = set(self.installs) | {v for pair in self.steps for v in pair}
        return sorted(found, key=version_key)

    @property
    def current(self) -> str:
        return self.versions[-1]

    def check_known(self, version: str) -> None:
        if version not in self.versions:
            raise CatalogError(
                f"unknown pg_tviews catalog version {version!r}",
                hint=f"known versions: {', '.join(self.versions)}",
            )

    def path(self, source: str, target: str) -> list[Script]:
        """The shortest sequence of steps from source to target (empty when equal)."""
        self.check_known(source)
        self.check_known(target)
        if source == target:
            return []
        previous: dict[str, tuple[str, Script] | None] = {source: None}
        queue = deque([source])
        while queue:
            here = queue.popleft()
            for (a, b), script in sorted(self.steps.items(), key=lambda kv: version_key(kv[0][1])):
                if a == here and b not in previous:
                    previous[b] = (here, script)
                    queue.append(b)
        if target not in previous:
            raise CatalogError(f"no migration path from {source} to {target}")
        steps: list[Script] = []
        node = target
        while previous[node] is not None:
            node, script = previous[node]  # type: ignore[misc]
            steps.append(script)
        return list(reversed(steps))

    def install_path(self, target: str) -> list[Script]:
        """How a fresh database reaches `target`: its install script, else an older one plus steps.

        This is the rule PostgreSQL applies to CREATE EXTENSION, so both install modes end in the
        same state.
        """
        self.check_known(target)
        if target in self.installs:
            return [self.installs[target]]
        best: list[Script] | None = None
        for base, script in self.installs.items():
            try:
                candidate = [script, *self.path(base, target)]
            except CatalogError:
                continue
            if best is None or len(candidate) < len(best):
                best = candidate
        if best is None:
            raise CatalogError(f"no install script reaches version {target}")
        return best


@cache
def load(sql_dir: Path = SQL_DIR) -> Chain:
    installs: dict[str, Script] = {}
    steps: dict[tuple[str, str], Script] = {}
    for path in sorted(sql_dir.glob(f"{EXTENSION}--*.sql")):
        match = _NAME.match(path.name)
        if not match:
            continue
        a, b = match.group("a"), match.group("b")
        if b is None:
            installs[a] = Script(path, None, a)
        else:
            steps[(a, b)] = Script(path, a, b)
    if not installs:
        raise CatalogError(f"no install scripts found in {sql_dir}")
    return Chain(installs, steps)
