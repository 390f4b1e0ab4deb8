"""The documentation names every command and every refused construct: docs stay true as the code grows."""

from __future__ import annotations

from pathlib import Path

import typer.main

from pg_tviews.cli import _register, app
from test_definition_rejections import CASES

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _commands(group, prefix: str = "") -> list[str]:
    found = []
    for name, command in getattr(group, "commands", {}).items():
        path = f"{prefix} {name}".strip()
        found.append(path)
        found += _commands(command, path)
    return found


def test_every_command_is_in_the_cli_reference():
    reference = (DOCS / "cli.md").read_text()
    _register()
    commands = _commands(typer.main.get_command(app))
    assert len(commands) > 30
    missing = [c for c in commands if f"`pg-tviews {c}" not in reference]
    assert missing == [], f"docs/cli.md does not describe: {missing}"


def test_every_refused_construct_is_documented():
    reference = (DOCS / "definitions.md").read_text().replace("&lt;", "<").replace("&gt;", ">")
    missing = [message for _sql, message, construct, *_ in CASES
               if construct not in ("sql", "syntax") and message not in reference]
    assert missing == [], f"docs/definitions.md lacks the errors: {missing}"
