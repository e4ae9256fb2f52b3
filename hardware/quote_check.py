"""Which TPM quote checker the verifier uses. Replaced by the real one when TPM support lands."""

from __future__ import annotations

from attest.verify import QuoteChecker


def default_quote_checker() -> QuoteChecker | None:
    return None
