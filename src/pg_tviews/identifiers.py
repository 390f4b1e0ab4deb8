"""Parsing names given by users (`app.tv_post`, `"My Schema"."tv post"`) safely.

Names reach SQL only as quoted identifiers; this module turns user text into (schema, name)
parts the way PostgreSQL reads an identifier chain, and rejects anything else (so text such as
`tv_x; DROP TABLE y` is an error, never SQL).
"""

from __future__ import annotations

import re

from .errors import UsageError

MAX_IDENTIFIER_BYTES = 63
# PostgreSQL's scanner: letters, digits, _ and $ of ASCII, and every non-ASCII character
_UNQUOTED = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*")
_SPACE = " \t\n\r\f\v"
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def split_identifier_chain(text: str) -> list[str]:
    """`a."B c".d` → ['a', 'B c', 'd'] with PostgreSQL's rules (unquoted parts are lowercased)."""
    parts: list[str] = []
    i, n = 0, len(text)
    if not text.strip(_SPACE):
        raise UsageError("empty name", hint="give a name such as tv_post or app.tv_post")
    if "\x00" in text:
        raise UsageError(f"invalid name {text!r}: PostgreSQL names cannot contain NUL characters")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise UsageError(f"invalid name {text!r}: not valid Unicode text", hint="pass names as UTF-8") from None
    while True:
        while i < n and text[i] in _SPACE:
            i += 1
        if i < n and text[i] == '"':
            j = i + 1
            buf = []
            while True:
                if j >= n:
                    raise UsageError(f"unterminated quoted identifier in {text!r}")
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            part = "".join(buf)
            if not part:
                raise UsageError(f"zero-length quoted identifier in {text!r}")
            i = j + 1
        else:
            match = _UNQUOTED.match(text, i)
            if not match:
                raise UsageError(
                    f"invalid name {text!r}",
                    hint='names are identifiers like tv_post or schema.tv_post; quote others: "My Table"',
                )
            # like PostgreSQL in a UTF-8 database: only ASCII letters are folded to lower case
            part = match.group(0).translate(_ASCII_LOWER)
            i = match.end()
        if len(part.encode()) > MAX_IDENTIFIER_BYTES:
            raise UsageError(
                f"name {part!r} is longer than PostgreSQL's limit of {MAX_IDENTIFIER_BYTES} bytes",
                hint="choose a shorter name (PostgreSQL would silently truncate it)",
            )
        parts.append(part)
        while i < n and text[i] in _SPACE:
            i += 1
        if i == n:
            return parts
        if text[i] != ".":
            raise UsageError(
                f"invalid name {text!r}: unexpected {text[i]!r}",
                hint='names are identifiers like tv_post or schema.tv_post; quote others: "My Table"',
            )
        i += 1


def parse_relation_name(text: str) -> tuple[str | None, str]:
    """(schema or None, relation) from `relation` or `schema.relation`."""
    parts = split_identifier_chain(text)
    if len(parts) == 1:
        return None, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise UsageError(f"invalid name {text!r}: use relation or schema.relation")
