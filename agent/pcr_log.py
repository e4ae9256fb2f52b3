"""The agent's events in its TPM PCR since the TPM was reset, kept so every quote can carry them.

The agent PCR (13 by default, ADR 0020) cannot be reset from the OS, so what the agent extends
there stays until the companion reboots; the verifier replays the log a quote carries against the
quoted value. At each start-up the agent extends one ``agent-start`` event: the digest of its
installed files and config (the ``companion.agent`` measurement). An agent build other than the
one attested, started since boot, is then visible to the verifier (``agent-pcr-history``).

The log lives in ``<state_dir>/agent-pcr.json``, tied to the TPM's reset count (a new boot starts a
new log). An event is written as *pending*, extended, then committed; after a crash in between,
the PCR's value says whether the extension happened. If the PCR does not replay from the log (the
log lost, or another process extending the PCR) quotes fail with the reason and the pass fails
closed; a reboot of the companion starts afresh.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from attest import jsonio
from attest.errors import FormatError
from attest.limits import LIMITS
from attest.quote import AGENT_START, AgentEvent, replay
from hardware.files import read_state_json, write_atomic
from hardware.tpm import TpmError, TpmSigner

log = logging.getLogger("flightseal.agent")
_W = "agent PCR log"


@dataclass
class _State:
    reset_count: int
    pcr: int
    events: list[AgentEvent] = field(default_factory=list)
    pending: AgentEvent | None = None

    def to_bytes(self) -> bytes:
        return json.dumps({"reset_count": self.reset_count, "pcr": self.pcr,
                           "events": [e.to_json() for e in self.events],
                           "pending": self.pending.to_json() if self.pending else None}).encode()


def _load(path: Path) -> _State | None:
    data = read_state_json(path, _W, 256 * 1024)
    if data is None:
        return None
    what = f"{_W} {path}"
    try:
        o = jsonio.expect_object(data, what, {"reset_count", "pcr", "events", "pending"})
        events = jsonio.expect_list(o["events"], what, "events", LIMITS.max_event_log_entries)
        return _State(jsonio.expect_int(o["reset_count"], what, "reset_count", 0, 2**32 - 1),
                      jsonio.expect_int(o["pcr"], what, "pcr", 0, 23),
                      [AgentEvent.from_json(e, f"events[{i}]") for i, e in enumerate(events)],
                      AgentEvent.from_json(o["pending"], "pending") if o["pending"] is not None else None)
    except FormatError as exc:
        raise FormatError(what, f"is corrupt ({exc.detail}); delete it and reboot the companion") from None


def resync(path: Path, signer: TpmSigner, agent_digest: bytes) -> None:
    """Before a quote: if the TPM was reset since the log was written (a power glitch of the TPM module,
    swtpm restarted), every PCR started again and so does the log: this start-up is recorded afresh
    (the agent running now is still the build it measured). The boot PCRs start again too, which a
    verifier with a boot policy sees."""
    state = _load(path)
    if state is None or state.reset_count != signer.reset_count():
        log.warning("the TPM was reset since the agent started: recording this start-up in PCR %d again",
                    signer.uri.agent_pcr)
        record_start(path, signer, agent_digest)


def record_start(path: Path, signer: TpmSigner, agent_digest: bytes) -> None:
    """Extend this start-up into the agent PCR, log it, and give the signer the log to quote with."""
    reset, pcr = signer.reset_count(), signer.uri.agent_pcr
    state = _load(path)
    if state is None or state.reset_count != reset or state.pcr != pcr:
        state = _State(reset, pcr)  # a new boot (or the first start, or another PCR): PCRs started again
    value = signer.agent_pcr_value()
    if state.pending is not None:  # killed between logging and extending: the PCR knows which
        if replay([e.value for e in [*state.events, state.pending]]) == value:
            state.events.append(state.pending)
        state.pending = None
    if replay([e.value for e in state.events]) != value:
        log.error("PCR %d does not replay from the agent's log (%d events): the log was lost, or another process "
                  "extends PCR %d; quotes will fail until the companion reboots (or choose another agent-pcr= in the "
                  "key URI)", pcr, len(state.events), pcr)
    if len(state.events) >= LIMITS.max_event_log_entries:
        raise TpmError(f"the agent started {len(state.events)} times since the companion booted; reboot it")
    event = AgentEvent(AGENT_START, agent_digest)
    state.pending = event
    write_atomic(path, state.to_bytes(), 0o600)
    signer.extend_agent_pcr(event)
    state.events.append(event)
    state.pending = None
    write_atomic(path, state.to_bytes(), 0o600)
    signer.agent_log = list(state.events)
