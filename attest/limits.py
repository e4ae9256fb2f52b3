"""Hard bounds on everything the core reads.

Endless data is an attack (TUF's "endless data"), so every size and count that comes from a
file, a MAVLink peer or an FTP server has a named bound here, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_manifest_bytes: int = 512 * 1024
    max_root_bytes: int = 64 * 1024
    max_enrollment_bytes: int = 16 * 1024
    max_envelope_bytes: int = 512 * 1024
    max_measurements: int = 512
    max_signatures: int = 32
    max_keys: int = 32
    max_json_containers: int = 20000
    max_string_chars: int = 4096
    max_claims: int = 64
    max_param_claims: int = 8200  # a parameter measurement may name every parameter (ADR 0010)
    max_named_param_differences: int = 64  # named in one measurement; more are counted, not named
    max_reasons: int = 256
    max_quote_bytes: int = 4096
    max_event_log_entries: int = 1024
    max_boot_log_bytes: int = 128 * 1024  # the companion's TCG boot event log (a UEFI PC's is 30-100 KiB)


LIMITS = Limits()
