"""Strings from outside, cleaned once where they enter: webhooks, the API, HL7, FHIR, CSV, web chat, email.

PostgreSQL refuses what SQLite takes: NUL in text and jsonb, lone UTF-16 surrogates (from a JSON body's
"\\ud800"), values longer than their column. Left to the database those are a 500 and a lost message, so
every entry point runs its values through here first:

- free text a person wrote (a message body, a name, a comment) is kept: NUL and lone surrogates become
  U+FFFD, so the patient's message is stored and staff can see something was there;
- identifiers (a MessageSid, a visit number, a code) cannot be valid with those characters or past their
  length, so they are refused with a BoundaryError naming the field, which callers answer with a 400.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REPLACEMENT = "\ufffd"
# NUL, and UTF-16 surrogates that did not pair up into a character (PostgreSQL's UTF-8 cannot hold them).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# C0 controls other than tab, newline and carriage return, DEL, and the unstorable ones: never part of an id.
_NOT_IN_IDENTIFIER = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class BoundaryError(ValueError):
    """A value from outside that cannot be valid; `field` names it for the 400 answer."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def storable(value: str) -> str:
    """`value` with what PostgreSQL cannot store replaced by U+FFFD; the rest untouched."""
    if _UNSTORABLE.search(value) is None:
        return value
    return _UNSTORABLE.sub(REPLACEMENT, value)


def clean_text(value: object, *, field: str, max_length: int | None = None, truncate: bool = False) -> str:
    """Free text: kept whatever it holds. Over `max_length` it is cut (`truncate`) or refused."""
    text = storable("" if value is None else str(value))
    if max_length is not None and len(text) > max_length:
        if truncate:
            return text[:max_length]
        raise BoundaryError(field, f"is longer than {max_length} characters")
    return text


def clean_identifier(value: object, *, field: str, max_length: int, required: bool = False) -> str:
    """An id or code: refused when it holds control characters or is longer than its column."""
    text = "" if value is None else str(value)
    if _NOT_IN_IDENTIFIER.search(text) is not None:
        raise BoundaryError(field, "contains control characters")
    if len(text) > max_length:
        raise BoundaryError(field, f"is longer than {max_length} characters")
    if required and not text.strip():
        raise BoundaryError(field, "is required")
    return text


def clean_json(value: Any) -> Any:
    """A structure bound for a jsonb column (a provider's payload): every key and string made storable."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, Mapping):
        return {storable(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value


def lookup_key(value: object, *, max_length: int) -> str:
    """A raw value used to find a row before the request is verified (the number a webhook was sent to).

    Nothing stored can hold NUL, a lone surrogate or more than its column, so such a value matches nothing:
    "" comes back, and the caller treats it as absent instead of sending PostgreSQL a value it refuses."""
    text = "" if value is None else str(value)
    if len(text) > max_length or _UNSTORABLE.search(text) is not None:
        return ""
    return text


def has_control_characters(value: str) -> bool:
    """True when `value` holds what clean_identifier refuses: a control character or a lone surrogate."""
    return _NOT_IN_IDENTIFIER.search(value) is not None


def has_lone_surrogate(value: str) -> bool:
    return _SURROGATE.search(value) is not None


def unstorable_path(value: Any, *, path: str = "") -> str | None:
    """The dotted path ("identities.0.value") of a string in a parsed JSON document holding a lone surrogate
    (for a key holding one, the path of its object), or None. Walked without recursion: a document may nest
    deeper than Python's stack."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if has_lone_surrogate(item):
                return where
        elif isinstance(item, Mapping):
            for key, child in item.items():
                child_path = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and has_lone_surrogate(key):
                    return where
                stack.append((child_path, child))
        elif isinstance(item, list | tuple):
            stack.extend((f"{where}.{index}" if where else str(index), child) for index, child in enumerate(item))
    return None
