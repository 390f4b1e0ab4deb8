"""Positions in the definition text, for errors that point at the offending construct."""

from __future__ import annotations

from ..errors import DefinitionError


def line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    offset = max(0, min(offset, len(text)))
    before = text[:offset]
    line = before.count("\n") + 1
    column = offset - (before.rfind("\n") + 1) + 1
    return line, column


def char_offset(text: str, byte_offset: int) -> int:
    """Character offset of a byte offset in the UTF-8 encoding of `text`."""
    return len(text.encode()[:byte_offset].decode(errors="ignore"))


def definition_error(
    sql: str,
    location: int | None,
    message: str,
    *,
    hint: str | None = None,
    construct: str | None = None,
    obj: str | None = None,
) -> DefinitionError:
    line = column = None
    if location is not None and location >= 0:
        line, column = line_col(sql, location)
    return DefinitionError(message, hint=hint, obj=obj, line=line, column=column, construct=construct)
