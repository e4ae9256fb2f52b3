"""What ``PreArm: FlightSeal: …`` means, in plain words for the operator (issue 16).

ArduPilot shows at most 50 characters, so the gate sends a reason code (``attest.models.Code``), a
parameter's name (``param RTL_ALT``, ``pinned FS_THR_ENABLE``) or one of the gate's own states
(``agent/gate/lua/flightseal_gate.lua``). This table is the one place each gets a sentence; a test
checks that every reason code has one.
"""

from __future__ import annotations

from attest.models import PILOT_PREFIX, Code

CODES: dict[str, str] = {
    Code.FIRMWARE_MISMATCH: "the flight controller's firmware is not the approved build",
    Code.FIRMWARE_ROLLBACK: "the firmware is older than the approved release (a downgrade)",
    Code.SCRIPT_UNKNOWN: "a Lua script on the flight controller is not in the approved list",
    Code.SCRIPT_MISMATCH: "an approved Lua script has been changed",
    Code.PARAM_MISMATCH: "a parameter differs from its approved value",
    Code.COMPONENT_UNKNOWN: "a part on the airframe is not in the approved list",
    Code.COMPONENT_MISMATCH: "a part's firmware or identity differs from what was approved",
    Code.COMPONENT_DENIED_ORIGIN: "a part comes from a country of origin the manifest does not allow",
    Code.COMPONENT_DENIED_VENDOR: "a part comes from a vendor the manifest does not allow",
    Code.WRONG_HARDWARE: "the flight controller board is not the approved hardware",
    Code.MANIFEST_EXPIRED: "the approved configuration (manifest) has expired: get a current one",
    Code.MANIFEST_ROLLBACK: "the manifest is older than one already seen (a rollback)",
    Code.MANIFEST_THRESHOLD: "the manifest lacks enough manufacturer signatures",
    Code.MANIFEST_SIGNATURE: "the manifest's signature does not verify",
    Code.MANIFEST_INVALID: "the manifest is malformed",
    Code.MEASUREMENT_MISSING: "the agent could not measure something the manifest requires",
    Code.REATTESTING: "something changed; the agent is checking the airframe again (wait a few seconds)",
    Code.MEASUREMENT_TOO_WEAK: "a measurement is too weak for what the manifest requires",
    Code.ENVELOPE_INVALID: "the attestation is malformed",
    Code.ENVELOPE_SIGNATURE: "the attestation's signature does not verify",
    Code.DEVICE_UNKNOWN: "the companion's device key is not enrolled",
    Code.WRONG_DEVICE: "the attestation comes from another device than the one expected",
    Code.NONCE_MISMATCH: "the attestation does not answer this challenge (replayed or stale)",
    Code.ATTESTATION_STALE: "the attestation is too old: challenge again",
    Code.ATTESTATION_FUTURE: "the attestation is dated in the future (check the clocks)",
    Code.SOFTWARE_KEY: "the device key is a development software key, not hardware-backed",
    Code.MANIFEST_REFERENCE: "the attestation names another manifest than the one in force",
    Code.VERDICT_DISAGREES: "the device's own verdict disagrees with the re-appraisal",
    Code.QUOTE_INVALID: "the TPM quote is malformed",
    Code.QUOTE_MISSING: "the attestation carries no TPM quote",
    Code.QUOTE_SIGNATURE: "the TPM quote's signature does not verify",
    Code.QUOTE_QUALIFYING_DATA: "the TPM quote is not bound to this attestation",
    Code.QUOTE_CLOCK_UNSAFE: "the TPM's clock is not safe (a reset or tampering)",
    Code.QUOTE_COUNTER_ROLLBACK: "the TPM's counters went back (a replayed quote)",
    Code.QUOTE_PCR_SELECTION: "the TPM quote covers the wrong registers",
    Code.QUOTE_PCR_DIGEST: "the TPM's registers do not match the measurements",
    Code.QUOTE_EVENT_LOG: "the companion's boot log does not match the TPM",
    Code.AGENT_PCR_HISTORY: "the agent's measurement history does not match the TPM",
    Code.PARAM_PINNED: "a pinned (safety) parameter has been changed",
    Code.POSTURE_UNSIGNED: "the flight controller's links are not MAVLink2-signed as required",
    Code.POSTURE_SCRIPT_CHECKSUMS: "the scripts are not protected by ArduPilot's checksums",
    Code.POSTURE_GATE_STOPPED: "the arming gate script is not running",
    Code.POSTURE_ARM_AUTH_OFF: "PX4 no longer asks FlightSeal before arming",
    Code.POSTURE_GATE_FORGERY: "someone sent the gate a forged verdict",
    Code.POSTURE_GATE_SILENT: "the arming gate has gone silent",
    Code.DEVICE_TPM_UNPROVEN: "the device key's TPM origin is not proven",
    Code.COMPANION_BOOT_LOG_MISSING: "the companion's boot log is missing",
    Code.COMPANION_BOOT_LOG_INVALID: "the companion's boot log is malformed",
    Code.COMPANION_BOOT_LOG_MISMATCH: "the companion's boot log does not match its measurements",
    Code.COMPANION_BOOT_UNKNOWN: "the companion booted software that is not approved",
    Code.COMPANION_BOOT_STAGE_MISSING: "a required companion boot stage is missing",
}

# the gate's own states (agent/gate/lua/flightseal_gate.lua) and the parameter forms of Reason.pilot_text
GATE: dict[str, str] = {
    "pass": "the airframe matches its approved configuration",
    "waiting": "no verdict from the FlightSeal agent yet: is the companion up and the agent running?",
    "verdict lapsed": "the agent stopped renewing its verdict: check the companion and its link",
    "bad verdict": "the gate received a verdict it could not authenticate",
    "gate error": "the arming gate script hit an error: check the FC's scripting",
    "no gate key": "the gate has no key installed: run `flightseal gate install`",
    "SCR_VM_I_COUNT too low": "raise SCR_VM_I_COUNT so the gate script can run",
    "forged verdict seen": "someone sent the gate a forged verdict",
    "no aux auth slot": "ArduPilot has no free auxiliary-authorisation slot for the gate",
}
PARAM_WORDS = {"param": "parameter {name} differs from its approved value",
               "pinned": "pinned (safety) parameter {name} has been changed"}


def _missing() -> list[str]:
    return [c.value for c in Code if c not in CODES]


def explain(text: str) -> str | None:
    """The plain-words meaning of a ``[PreArm: ]FlightSeal: …`` text, or None if it is not ours."""
    body = text.strip().removeprefix("PreArm: ")
    if not body.startswith(PILOT_PREFIX):
        return None
    what = body.removeprefix(PILOT_PREFIX).strip()
    if what in CODES:
        return CODES[what]
    if what in GATE:
        return GATE[what]
    word, _, name = what.partition(" ")
    if word in PARAM_WORDS and name:
        return PARAM_WORDS[word].format(name=name)
    for code, sentence in CODES.items():  # a code cut at 42 characters
        if len(what) >= 8 and code.startswith(what):
            return sentence
    return None
