"""Strict JSON in, deterministic JSON out.

Python's ``json`` accepts duplicate keys (last one wins) and NaN, each a way to make two
parsers disagree about a signed document. Everything the core parses goes through
:func:`loads`, which refuses both and bounds the size and the number of objects and lists
(counted cheaply on the raw bytes; over-deep nesting ends in the C parser's recursion limit,
reported as invalid JSON).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from attest.errors import FormatError
from attest.limits import LIMITS


def _no_duplicates(what: str):  # type: ignore[no-untyped-def]
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise FormatError(what, "duplicate key in JSON object", key)
                seen.add(key)
        return out

    return hook


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def loads(data: bytes | str, what: str, max_bytes: int) -> Any:
    """Parse one JSON document, refusing oversize input, duplicate keys, NaN and deep nesting."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise FormatError(what, f"is {len(raw)} bytes, more than the limit of {max_bytes}")
    containers = raw.count(b"{") + raw.count(b"[")
    if containers > LIMITS.max_json_containers:
        raise FormatError(what, f"has {containers} objects and lists, more than the limit of "
                                f"{LIMITS.max_json_containers}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(what, f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates(what), parse_constant=_reject_constant,
                           parse_float=_finite_float)
    except FormatError:
        raise
    except (ValueError, RecursionError) as exc:
        raise FormatError(what, f"is not valid JSON ({exc})") from None
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(value, what)
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _refuse_lone_surrogates(value: Any, what: str) -> None:
    """A ``\\ud800`` escape without its pair decodes to a string that is not Unicode text: it cannot be
    written back as UTF-8, so a document holding one was accepted and then crashed whoever printed,
    signed or logged it (issue 11, found by the fuzz campaign). Paired escapes (emoji) are fine."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise FormatError(what, "holds a \\u escape of a lone UTF-16 surrogate, which is not text") from None


def dumps(value: Any) -> bytes:
    """Deterministic encoding: sorted keys, no insignificant white space, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def pretty(value: Any) -> str:
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def expect_object(value: Any, what: str, required: set[str], optional: set[str] | frozenset[str] = frozenset(),
                  field: str | None = None) -> dict[str, Any]:
    """Check a JSON object has exactly the known fields (closed schema) and all required ones."""
    if not isinstance(value, dict):
        raise FormatError(what, "must be a JSON object", field)
    missing = sorted(required - value.keys())
    if missing:
        prefix = f"{field}." if field else ""
        raise FormatError(what, "required field is missing", prefix + missing[0])
    unknown = sorted(value.keys() - required - set(optional))
    if unknown:
        prefix = f"{field}." if field else ""
        raise FormatError(what, "unknown field (the schema is closed)", prefix + unknown[0])
    return value


def expect_str(value: Any, what: str, field: str, max_chars: int = LIMITS.max_string_chars) -> str:
    if not isinstance(value, str):
        raise FormatError(what, f"must be a string, not {type(value).__name__}", field)
    if len(value) > max_chars:
        raise FormatError(what, f"is longer than {max_chars} characters", field)
    return value


def expect_int(value: Any, what: str, field: str, minimum: int = 0, maximum: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(what, f"must be an integer, not {type(value).__name__}", field)
    if not minimum <= value <= maximum:
        raise FormatError(what, f"must be between {minimum} and {maximum}", field)
    return value


def expect_number(value: Any, what: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FormatError(what, f"must be a number, not {type(value).__name__}", field)
    if not math.isfinite(value) or abs(value) > 2**53:
        raise FormatError(what, "must be a finite number no larger than 2**53", field)
    return float(value)


def expect_bool(value: Any, what: str, field: str) -> bool:
    if not isinstance(value, bool):
        raise FormatError(what, f"must be true or false, not {type(value).__name__}", field)
    return value


def expect_list(value: Any, what: str, field: str, max_items: int) -> list[Any]:
    if not isinstance(value, list):
        raise FormatError(what, f"must be a list, not {type(value).__name__}", field)
    if len(value) > max_items:
        raise FormatError(what, f"has more than {max_items} items", field)
    return value


def expect_str_list(value: Any, what: str, field: str, max_items: int = 1024) -> list[str]:
    items = expect_list(value, what, field, max_items)
    return [expect_str(v, what, f"{field}[{i}]") for i, v in enumerate(items)]


def expect_str_map(value: Any, what: str, field: str, max_items: int = 1024) -> dict[str, str]:
    if not isinstance(value, dict):
        raise FormatError(what, "must be a JSON object", field)
    if len(value) > max_items:
        raise FormatError(what, f"has more than {max_items} entries", field)
    return {str(k): expect_str(v, what, f"{field}.{k}") for k, v in value.items()}


