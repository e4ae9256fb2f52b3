"""Exceptions of the core, named after what went wrong.

Every error a parser or verifier raises derives from :class:`FlightSealError`, so callers at
the edge (the CLI, the agent) can turn any of them into one clear line without a traceback.
"""

from __future__ import annotations


class FlightSealError(Exception):
    """Base of every error the project raises on purpose."""


class FormatError(FlightSealError):
    """Input bytes are not the document they claim to be (JSON, types, schema, size)."""

    def __init__(self, what: str, detail: str, field: str | None = None) -> None:
        self.what = what
        self.field = field
        self.detail = detail
        where = f"{what}: {field}" if field else what
        super().__init__(f"{where}: {detail}")


class SignatureError(FlightSealError):
    """A signature is missing, malformed, by an unknown key, or does not verify."""


class ThresholdError(SignatureError):
    """Fewer distinct authorised keys signed than the role's threshold demands."""


class ExpiredMetadataError(FlightSealError):
    """Signed metadata is past its expiry time."""


class RollbackError(FlightSealError):
    """Signed metadata has a lower version than one already trusted."""


class KeyLoadError(FlightSealError):
    """A key could not be loaded, created or used (wrong type, missing, unreadable)."""
