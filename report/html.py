"""The bill as one self-contained HTML page a buyer reads and prints (ADR 0023).

Inline CSS (``templates/report.css``, hashed for a server's Content-Security-Policy), no script, no
external resource, so it prints to PDF and opens offline. Jinja2
autoescapes everything: names and claims come from the device and the manifest, never trusted.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from importlib.resources import files

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from attest.bom import Bill, Entry
from attest.manifest import COMPONENT_CLASSES
from attest.policy import BuyerPolicy, Finding

CSS = files("report").joinpath("templates", "report.css").read_text(encoding="utf-8")
# For a server that serves the page (the fleet): nothing loads, and only this very stylesheet applies.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'sha256-"
                           + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
                           + "'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
_ENV = Environment(loader=PackageLoader("report", "templates"), autoescape=select_autoescape(["html"]),
                   undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def cannot_prove(bill: Bill) -> list[str]:
    """What this evidence does not show, in plain words; the general limits first, then this bill's."""
    out = [
        "Origins, vendors and supplier data are what the manufacturer declared in its signed manifest. The "
        "signatures prove who declared them, not that the declaration is true.",
        "A part is recognised by the identity it reports (a MAVLink or DroneCAN id, a hardware id). A counterfeit "
        "part that reports the approved identity looks the same.",
        "The flight controller's board identity is what its firmware reports. Reading the flash proves what code "
        "runs on the board, not who made the board.",
        "The attestation shows the airframe at the moment it was made. It says nothing about changes after that "
        "moment.",
        "Nothing here looks inside a chip: hardware implants and flaws in the approved software are not detected.",
    ]
    weak = [e.name for e in bill.entries if e.strength is not None and e.strength.label in ("self-reported",
                                                                                            "observed")]
    if weak:
        out.append(f"{len(weak)} item(s) are only self-reported or observed on the bus ({', '.join(weak[:6])}"
                   f"{', …' if len(weak) > 6 else ''}). Compromised software could report the approved values.")
    declared = [e.name for e in bill.entries if not e.measured]
    if declared:
        out.append(f"{', '.join(declared)}: declared by the manufacturer, and not measured at all.")
    if not bill.nonce_checked:
        out.append("No challenge nonce was checked: this is evidence handed over, and its freshness rests only on "
                   "its age limit. Ask for a fresh attestation against your own nonce to prove it is current.")
    if bill.key_kind == "software":
        out.append("The device signed with a software key, which a copied disk can reproduce: a development setup.")
    return out


def identity(e: Entry) -> list[tuple[str, bool]]:
    """The lines of an entry's identity cell: (text, is a digest)."""
    lines = [(f"version {e.version}" + (f" ({e.git_hash})" if e.git_hash else ""), False)] if e.version else []
    lines += [(f"{alg}:{v[:16]}…", True) for alg, v in e.digests.items()]
    return lines + [(f"{k}: {v}", False) for k, v in e.details.items()]


def to_html(bill: Bill, findings: Sequence[Finding] | None = None, policy: BuyerPolicy | None = None) -> str:
    """The report page; ``findings`` and ``policy`` when a buyer's policy was applied."""
    verdict = ("not verified" if not bill.verified else "meets the policy" if findings is not None and not findings
               else "does not meet the policy" if findings else "verified")
    classes = [c for c in COMPONENT_CLASSES if bill.of_class(c)]
    return _ENV.get_template("report.html").render(
        bill=bill, findings=findings, policy=policy, verdict=verdict, ok=bill.verified and not findings,
        classes=classes, cannot=cannot_prove(bill), identity=identity, css=Markup(CSS))
