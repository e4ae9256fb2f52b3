"""The agent's start-ups in a PCR the OS cannot reset (ADR 0020), end to end: a real agent with a key
in swtpm, on the virtual FC; its attestations carry the log and the offline quote check replays it."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from attest.enrollment import DeviceRecord
from attest.keys import KeyKind
from attest.models import Code
from attest.quote import check_predicate_quote
from tests.test_agent_e2e import _world_parts


def test_each_agent_start_is_in_the_agent_pcr_and_another_build_since_boot_is_named(tmp_path: Path) -> None:
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed (scripts/install.sh installs it)")
    from agent.pcr_log import record_start
    from hardware.tpm import TpmSigner, create_key
    from sim.launchers.swtpm import Swtpm

    with Swtpm() as tpm:
        signer = create_key(tpm.key_uri(0x81010100))
        rig, fc, gcs = _world_parts(tmp_path, signer)
        device = DeviceRecord("drone-001", "FS-Quad-1", signer.public_key, KeyKind.TPM)
        try:
            rig.start_agent()
            first = rig.wait_verdict(passed=True).status.last
            assert first is not None and first.predicate.quote is not None
            log = first.predicate.quote["agent_log"]
            agent = next(m for m in first.predicate.measurements if m.component == "companion.agent")
            assert [e["digest"] for e in log] == [agent.digests["sha256"]]
            assert check_predicate_quote(first.predicate, device) == []
            rig.stop_agent()

            with TpmSigner.open(signer.uri) as other:  # another build of the agent ran in this boot
                record_start(tmp_path / "state" / "agent-pcr.json", other, hashlib.sha256(b"other build").digest())
            rig.start_agent()
            again = rig.wait_verdict(passed=True).status.last
            assert again is not None and again.predicate.quote is not None
            assert len(again.predicate.quote["agent_log"]) == 3
            reasons = check_predicate_quote(again.predicate, device)
            assert [r.code for r in reasons] == [Code.AGENT_PCR_HISTORY], reasons
            assert "reboot after an update" in reasons[0].detail
        finally:
            gcs.close()
            rig.stop_agent()
            fc.stop()
            signer.close()
