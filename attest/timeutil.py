"""RFC 3339 UTC timestamps, the only time format in signed documents."""

from __future__ import annotations

from datetime import UTC, datetime

from attest.errors import FormatError


def parse(text: str, what: str, field: str) -> datetime:
    if not isinstance(text, str) or not text.endswith("Z"):
        raise FormatError(what, "must be an RFC 3339 UTC time ending in 'Z'", field)
    try:
        value = datetime.fromisoformat(text[:-1] + "+00:00")
    except ValueError:
        raise FormatError(what, f"is not an RFC 3339 time: {text!r}", field) from None
    return value.astimezone(UTC)


def format(value: datetime) -> str:
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def now() -> datetime:
    return datetime.now(UTC)
