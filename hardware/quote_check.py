"""Which TPM quote checker the verifier uses: :func:`attest.quote.check_predicate_quote`.

The verifier may remember, per device, the TPM clock and counters of the last quote it
accepted; given them, a quote whose counters or clock went back is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from attest.enrollment import DeviceRecord
from attest.evidence import Predicate
from attest.models import Reason
from attest.quote import ClockInfo, check_predicate_quote
from attest.verify import QuoteChecker


def default_quote_checker(last_clocks: Mapping[str, ClockInfo] | None = None) -> QuoteChecker:
    """A checker for ``verify_attestation``; ``last_clocks`` maps device id to the last accepted quote's clock."""
    known = dict(last_clocks or {})

    def check(predicate: Predicate, device: DeviceRecord) -> list[Reason]:
        return check_predicate_quote(predicate, device, known.get(device.device_id))

    return check
