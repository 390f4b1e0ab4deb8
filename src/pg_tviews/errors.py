"""The error hierarchy of pg_tviews.

Every error carries a message (what is wrong), optionally the object or position concerned (where)
and a hint (how to fix it). The CLI prints them as one line plus the hint, without a traceback,
and maps them to exit codes: bad input exits 2, failed checks exit 1.
"""

from __future__ import annotations


class TViewError(Exception):
    """Base class of all pg_tviews errors."""

    #: process exit code used by the CLI
    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None, obj: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.obj = obj

    def __str__(self) -> str:
        where = f"{self.obj}: " if self.obj else ""
        return f"{where}{self.message}"


class UsageError(TViewError):
    """Bad arguments or options given to a command or API function."""


class ConnectionFailed(TViewError):
    """The database could not be reached."""


class ServerError(TViewError):
    """The embedded or a test PostgreSQL server could not be initialised, started or stopped."""


class CatalogError(TViewError):
    """The pg_tviews catalog is missing, at an unexpected version, or cannot be migrated."""


class DefinitionError(TViewError):
    """A TVIEW definition is not supported; names the construct, its line:column and a hint."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        obj: str | None = None,
        line: int | None = None,
        column: int | None = None,
        construct: str | None = None,
    ):
        super().__init__(message, hint=hint, obj=obj)
        self.line = line
        self.column = column
        self.construct = construct

    def __str__(self) -> str:
        where = f" at line {self.line}, column {self.column}" if self.line is not None else ""
        prefix = f"{self.obj}: " if self.obj else ""
        return f"{prefix}{self.message}{where}"


class NotFound(TViewError):
    """A named TVIEW or object does not exist."""


class CheckFailed(TViewError):
    """A check (health, validation, consistency) found a problem."""

    exit_code = 1


class UpgradeError(TViewError):
    """An upgrade step was refused or failed; nothing was changed."""
