"""Exceptions of the core, named after what went wrong, and the one error convention (issue 13).

**Raise** when the input cannot be used at all: unreadable, malformed, the wrong kind of key, a
signature that does not verify, a threshold not met, a rollback. Every such error derives from
:class:`FlightSealError` and names the file or field and, where there is one, the fix.

**Collect reasons** (:class:`attest.models.Reason`, a stable code) when the input is usable and
the question is whether it *passes*: appraisal, quote checks, verification. A verdict lists every
reason at once; nothing is raised for a failed check.

**At the edge** one map turns either into an exit code (``agent/cli/main.py``): 0 pass, 1 a check
failed (reasons, or a :class:`FlightSealError` that is not a usage error), 2 unusable input
(:class:`FormatError`, :class:`KeyLoadError`, ``OSError``). No command calls ``sys.exit`` itself.
The daemon turns the same errors into a fail verdict for the gate and an audit record; it never
stops on one.
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
