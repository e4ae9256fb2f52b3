"""Hard bounds on everything FlightSeal reads, in one place (issue 13).

Endless data is an attack (TUF's "endless data"), so every size and count that comes from a
file, a MAVLink peer or an FTP server has a named bound here, in one place. Protocol facts (a MAVLink
FTP payload is 239 bytes, a TPM2B holds 128) stay beside the protocol: they are not limits one tunes.
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
    # files and peers at the edges (agent/, hardware/, truststore/ name these through their old constants)
    max_config_bytes: int = 64 * 1024  # agent.toml
    max_audit_record_bytes: int = 1024 * 1024  # one line of the audit log
    max_tpm_identity_file_bytes: int = 16 * 1024  # a TPM identity, challenge or answer file
    max_tpm_ca_files: int = 256  # TPM vendor CA certificates in a folder
    max_tpm_ca_bytes: int = 256 * 1024  # one TPM vendor CA file
    max_devices: int = 4096  # enrolled devices in a trust directory
    max_root_rotations: int = 1024  # root versions crossed in one update
    max_manifest_image_bytes: int = 64 * 1024 * 1024  # a firmware file hashed into a manifest
    max_companion_files: int = 4096  # files of the agent's installed packages
    max_companion_file_bytes: int = 16 * 1024 * 1024  # one of those files
    max_params: int = 8192  # parameters of one FC
    max_image_cache_bytes: int = 64 * 1024  # the image cache file
    max_image_cache_entries: int = 64  # entries in it
    max_components: int = 256  # MAVLink components heard on one link
    max_types_per_component: int = 64  # message types kept per component
    max_flash_bytes: int = 64 * 1024 * 1024  # flash read through the bootloader
    max_auth_file_bytes: int = 256  # a TPM key's auth file
    max_apj_bytes: int = 32 * 1024 * 1024  # an .apj firmware file
    max_firmware_image_bytes: int = 16 * 1024 * 1024  # the image inside it
    max_pin_bytes: int = 256  # a PKCS#11 PIN file
    max_boot_log_events: int = 4096  # events in a TCG boot event log
    max_ek_chain: int = 5  # certificates in an EK chain
    max_cert_bytes: int = 4096  # one DER certificate


LIMITS = Limits()
