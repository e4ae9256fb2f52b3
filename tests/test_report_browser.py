"""The HTML report in a real browser: Debian's headless Chromium renders it, self-contained and printable."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from agent.cli.main import main
from attest.models import Strength
from attest.policy import BuyerPolicy
from report.html import CONTENT_SECURITY_POLICY
from tests.bom_kit import buyer_key, signed_policy, write_airframe
from tests.browser import chromium, screenshot


def test_the_report_renders_offline_and_prints(tmp_path: Path) -> None:
    a = write_airframe(tmp_path, camera_origin="CN", image=False)
    key, _, pub = buyer_key(tmp_path)
    policy = signed_policy(tmp_path / "p.json", BuyerPolicy(
        "Agency procurement", require_classes=("flight-controller", "camera"), deny_origins=("CN",),
        min_strength={"flight-controller": Strength.FLASH_READ}), key)
    html = tmp_path / "report.html"
    r = CliRunner().invoke(main, ["report", "--attestation", str(a.attestation), "--trust", str(a.trust),
                                  "--policy", str(policy), "--policy-key", str(pub), "--allow-software-keys",
                                  "--html", str(html)])
    assert r.exit_code == 1, r.output  # written, and the findings make it exit 1
    requests: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("request", lambda req: requests.append(req.url))
        page.goto(html.as_uri())
        assert "does not meet the policy" in page.inner_text("#verdict")
        assert "origin-denied" in page.inner_text("#findings")
        rows = page.inner_text("#components")
        assert "gimbal camera" in rows and "self-reported by the software itself" in rows
        assert "declared by the manufacturer, not measured" in rows
        assert "No challenge nonce was checked" in page.inner_text("#cannot")
        screenshot(page, "report-refused", folder="report")
        pdf = page.pdf(format="A4")
        assert pdf.startswith(b"%PDF")
    assert requests == [html.as_uri()]  # nothing fetched but the page itself


def test_the_report_keeps_its_style_under_the_servers_content_security_policy(tmp_path: Path) -> None:
    """The fleet serves the page with CONTENT_SECURITY_POLICY: its inline stylesheet must still apply."""
    a = write_airframe(tmp_path)
    html = tmp_path / "report.html"
    r = CliRunner().invoke(main, ["report", "--attestation", str(a.attestation), "--trust", str(a.trust),
                                  "--allow-software-keys", "--html", str(html)])
    assert r.exit_code == 0, r.output
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.route("http://fleet.test/report.html", lambda route: route.fulfill(
            body=html.read_text(), content_type="text/html",
            headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY}))
        page.goto("http://fleet.test/report.html")
        colour = page.eval_on_selector("#verdict", "e => getComputedStyle(e).backgroundColor")
        assert colour == "rgb(218, 251, 225)"  # .ok's green: the stylesheet was allowed
        screenshot(page, "report-verified", folder="report")
