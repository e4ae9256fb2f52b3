"""``flightseal verify`` (operator, offline) and ``flightseal attest`` (device, one pass)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import click

from agent.attestation import DEFAULT_BOOT_LOG, check_manifest, seal_measurements, with_boot_log
from agent.cli.measure import mavlink_options, run_measure
from agent.cli.options import EXIT_FAIL, EXIT_USAGE, CheckFailed
from agent.verifier import verify_envelope
from attest import jsonio, timeutil
from attest.errors import FlightSealError, FormatError, KeyLoadError
from attest.limits import LIMITS
from attest.models import Measurement, Reason
from attest.trust import VerifiedManifest
from hardware.files import read_bounded, write_atomic
from hardware.uri import load_signer


def parse_nonce(text: str) -> bytes:
    try:
        nonce = bytes.fromhex(text)
    except ValueError:
        raise click.BadParameter("must be hex, e.g. from `flightseal nonce`", param_hint="--nonce") from None
    if not 16 <= len(nonce) <= 64:
        raise click.BadParameter("must be 16 to 64 bytes (32 to 128 hex digits)", param_hint="--nonce")
    return nonce


@click.command("nonce")
def nonce() -> None:
    """Print a fresh random 32-byte challenge nonce (hex)."""
    click.echo(secrets.token_hex(32))


@click.command("verify")
@click.argument("attestation", type=click.Path(path_type=Path))
@click.option("--trust", "trust_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Trust directory: root.json, manifest.json, devices/*.json.")
@click.option("--nonce", "nonce_hex", required=True, help="The challenge nonce you sent (hex).")
@click.option("--manifest", "manifest_path", type=click.Path(path_type=Path),
              help="Manifest to appraise against (default: TRUST/manifest.json).")
@click.option("--device", "expected_device", help="Device id this attestation must come from.")
@click.option("--max-age", type=click.IntRange(1, 10 * 365 * 86400), default=300, show_default=True,
              help="Seconds.")
@click.option("--allow-software-keys", is_flag=True, help="Accept development software device keys.")
@click.option("--require-quote", is_flag=True, help="Refuse attestations without a TPM quote.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
def verify(attestation: Path, trust_dir: Path, nonce_hex: str, manifest_path: Path | None,
           expected_device: str | None, max_age: int, allow_software_keys: bool, require_quote: bool,
           as_json: bool) -> None:
    """Verify an attestation offline. Exit 0 pass, 1 fail (reasons printed), 2 unusable input."""
    try:
        _verify(attestation, trust_dir, nonce_hex, manifest_path, expected_device, max_age, allow_software_keys,
                require_quote, as_json)
    except (FlightSealError, click.ClickException) as exc:
        if not as_json or isinstance(exc, CheckFailed):
            raise
        # a script reading --json gets a document on stdout for every outcome, then the same exit code
        usage = isinstance(exc, FormatError | KeyLoadError | click.ClickException)
        code = EXIT_USAGE if usage else EXIT_FAIL
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        click.echo(json.dumps({"passed": False, "exit_code": code, "error": message, "reasons": []}, indent=2))
        click.echo(f"flightseal: {'error' if usage else 'failed'}: {message}", err=True)
        raise SystemExit(code) from None


def _verify(attestation: Path, trust_dir: Path, nonce_hex: str, manifest_path: Path | None,
            expected_device: str | None, max_age: int, allow_software_keys: bool, require_quote: bool,
            as_json: bool) -> None:
    expected_nonce = parse_nonce(nonce_hex)
    envelope = read_bounded(attestation, "attestation", LIMITS.max_envelope_bytes)
    checked = verify_envelope(envelope, trust_dir, expected_nonce, manifest_path=manifest_path,
                              expected_device=expected_device, max_age=max_age,
                              allow_software_keys=allow_software_keys, require_quote=require_quote)
    result = checked.result
    p = result.predicate
    if as_json:
        click.echo(json.dumps({
            "passed": result.passed,
            "device": result.device.device_id if result.device else None,
            "key_kind": result.device.key_kind.value if result.device else None,
            "manifest_version": p.manifest.version if p and p.manifest else None,
            "posture": checked.manifest().describe_posture() if result.passed else None,
            "companion_boot": checked.manifest().describe_boot() if result.passed else None,
            "time": timeutil.format(p.time) if p else None,
            "reasons": [r.to_json() for r in result.reasons],
        }, indent=2))
    else:
        for line in checked.lines():
            click.echo(line)
    if not result.passed:
        raise CheckFailed("")


@click.command("attest")
@click.option("--measurements", "measurements_path", type=click.Path(path_type=Path),
              help="Measurements JSON (a list, as printed by `flightseal measure --json`).")
@click.option("--mavlink", "url", help="Measure the FC over this link instead (e.g. tcp:127.0.0.1:5762).")
@click.option("--manifest", "manifest_path", type=click.Path(path_type=Path), required=True)
@click.option("--root", "root_path", type=click.Path(path_type=Path), required=True, help="Pinned root.json.")
@click.option("--key", "key", required=True, help="Device key URI (tpm:, pkcs11:, file:).")
@click.option("--device-id", required=True)
@click.option("--airframe", required=True)
@click.option("--nonce", "nonce_hex", required=True, help="Operator's challenge nonce (hex).")
@click.option("-o", "--out", type=click.Path(path_type=Path), required=True)
@click.option("--boot-event-log", "boot_log", type=click.Path(path_type=Path), default=DEFAULT_BOOT_LOG,
              show_default=True, help="The companion's TCG boot event log, carried in the TPM quote (none if absent).")
@mavlink_options
def attest(measurements_path: Path | None, url: str | None, manifest_path: Path, root_path: Path, key: str,
           device_id: str, airframe: str, nonce_hex: str, out: Path, boot_log: Path, **link_options: Any) -> None:
    """Appraise measurements against the manifest and write a signed attestation.

    The measurements come from a file (--measurements) or from one pass over MAVLink (--mavlink):
    measure, appraise, sign. Exit 0 if the verdict passes, 1 if it fails (the failing attestation
    is still written).
    """
    from attest.trust import TrustedState

    if (measurements_path is None) == (url is None):
        raise click.UsageError("give exactly one of --measurements FILE and --mavlink URL")
    nonce_bytes = parse_nonce(nonce_hex)
    measurements = read_measurements(measurements_path) if measurements_path is not None else []
    problems: list[Reason] = []
    trust = TrustedState(read_bounded(root_path, "root", LIMITS.max_root_bytes))
    now = timeutil.now()
    manifest = check_manifest(trust, read_bounded(manifest_path, "manifest", LIMITS.max_manifest_bytes), now)
    if url is not None:
        policy = manifest.manifest.params if isinstance(manifest, VerifiedManifest) else None
        inv = run_measure(url, policy=policy, all_params=False, **link_options)
        for p in inv.problems:
            click.echo(f"MISSING {p.component}: {p.detail}", err=True)
        measurements = inv.measurements
        problems = inv.problems
        now = timeutil.now()
    from hardware.uri import quoter_for

    signer = load_signer(key)
    sealed = seal_measurements(measurements, manifest, signer, device_id=device_id, airframe=airframe,
                               nonce=nonce_bytes, now=now,
                               quoter=with_boot_log(quoter_for(signer, measurements), boot_log),
                               problems=problems)
    write_atomic(out, sealed.envelope.to_bytes())
    verdict = sealed.verdict
    click.echo(f"wrote attestation to {out}: verdict {'PASS' if verdict.passed else 'FAIL'}")
    for r in verdict.reasons:
        click.echo(f"  {r}")
    if not verdict.passed:
        raise CheckFailed("")


def read_measurements(path: Path) -> list[Measurement]:
    raw = jsonio.loads(read_bounded(path, "measurements", LIMITS.max_envelope_bytes), f"measurements {path}",
                       LIMITS.max_envelope_bytes)
    items = jsonio.expect_list(raw, f"measurements {path}", "(top level)", LIMITS.max_measurements)
    try:
        return [Measurement.from_json(m) for m in items]
    except FormatError as exc:
        raise FormatError(f"measurements {path}", exc.detail, exc.field) from None


def register(group: click.Group) -> None:
    group.add_command(nonce)
    group.add_command(verify)
    group.add_command(attest)
