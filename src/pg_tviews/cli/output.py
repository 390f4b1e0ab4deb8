"""How commands speak: rich text for people, JSON for scripts (``--json``), errors on stderr."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "as_dict"):
            return to_jsonable(value.as_dict())
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass
class Output:
    json: bool = False
    debug: bool = False
    console: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True))

    def emit(self, data: Any, render: Callable[[Console], None] | None = None) -> None:
        """Print `data` as JSON with --json, else let `render` draw it for people."""
        if self.json:
            sys.stdout.write(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        elif render is not None:
            render(self.console)
        else:
            self.console.print(data)

    def note(self, message: str) -> None:
        """Progress or informational text for people; silent with --json (stdout stays JSON)."""
        if not self.json:
            self.console.print(message)

    def error(self, message: str, hint: str | None = None) -> None:
        self.err.print(f"[bold red]error:[/] {_escape(message)}")
        if hint:
            self.err.print(f"[dim]hint:[/] {_escape(hint)}")

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/] {_escape(message)}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
