"""One measurement pass over an open link: every collector, in an order that shares the link well.

Order: firmware identity first (it decides the image cache key and whether a SITL binary
applies), then FTP work (scripts, parameters, image), then the components (which by then have
been heard for a while), then the companion. Each collector's failure is recorded and the pass
goes on; only a lost link ends it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from agent.mavlink.ftp import FtpClient, FtpError, FtpLimits
from agent.mavlink.link import MAV_STATE_BOOT, Link, LinkLost
from agent.measure.base import CollectError, Inventory, MeasureOptions
from agent.measure.companion import collect_companion
from agent.measure.components import collect_components
from agent.measure.firmware import IDENTITY, IMAGE, collect_identity, collect_image
from agent.measure.imagecache import ImageCache
from agent.measure.params import COMPONENT as PARAMS
from agent.measure.params import collect_params
from agent.measure.posture import collect_posture
from agent.measure.scripts import PREFIX as SCRIPTS
from agent.measure.scripts import collect_scripts
from attest.models import Kind, Measurement, Strength

T = TypeVar("T")


def _timed(inv: Inventory, name: str, fn: Callable[[], T]) -> T:
    start = time.monotonic()
    try:
        return fn()
    finally:
        inv.timings[name] = round(time.monotonic() - start, 3)


def wait_booted(link: Link, timeout: float) -> bool:
    """Wait (bounded) until the FC's heartbeat leaves MAV_STATE_BOOT.

    Measured during boot, ArduPilot is in flux: right after a reboot SITL served a param.pck whose
    header counted 1358 parameters while the scripting ones were still appearing (1368 a second
    later), and calibration values are still 0. So a pass waits for the FC to be up.
    """
    deadline = time.monotonic() + timeout
    tsys, tcomp = link.fc
    while link.fc_heartbeat is None or link.fc_heartbeat.system_status == MAV_STATE_BOOT:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        # ask for a heartbeat rather than wait up to a second for the next 1 Hz one (SITL answers)
        link.send(link.mav.command_long_encode(tsys, tcomp, 512, 0, 0.0, 0, 0, 0, 0, 0, 0))
        link.recv(["HEARTBEAT"], min(remaining, 0.25), lambda m: (m.get_srcSystem(), m.get_srcComponent()) == link.fc)
    return True


def measure(link: Link, opts: MeasureOptions | None = None, cache: ImageCache | None = None,
            ftp_limits: FtpLimits | None = None) -> Inventory:
    opts = opts or MeasureOptions()
    inv = Inventory()
    if not _timed(inv, "boot-wait", lambda: wait_booted(link, opts.boot_wait)):
        inv.missing("fc", f"the FC was still booting after {opts.boot_wait:.0f} s; measured anyway")
    if link.config.signing_key is not None and not getattr(link.fc_heartbeat, "_signed", False):
        # the link drops the FC's unsigned answers: every request would time out, and nothing it said
        # could be trusted anyway; say so at once (the posture names it: posture-unsigned)
        inv.missing("fc", "the FC no longer signs its packets (signing removed or another key): nothing it says "
                          "is measured; set signing up again (`flightseal signing setup`)")
        inv.measurements.append(collect_posture(link, inv))
        return inv
    client = FtpClient(link, ftp_limits)
    ftp: FtpClient | None = client
    try:
        _timed(inv, "ftp-reset", client.reset_sessions)
    except LinkLost:
        raise
    except FtpError as exc:
        inv.missing("fc.ftp", f"MAVLink FTP does not answer ({exc}); scripts, parameters and image read "
                              "fall back or are missing")
        ftp = None
    ident = None
    try:
        ident = _timed(inv, "identity", lambda: collect_identity(link))
        inv.measurements.append(ident.measurement)
    except LinkLost:
        raise
    except CollectError as exc:
        inv.missing(IDENTITY, str(exc))
    if ftp is not None:
        _timed(inv, "scripts", lambda: collect_scripts(ftp, opts, inv))
    else:
        inv.measurements.append(_unlisted_scripts())
    params = _timed(inv, "params", lambda: collect_params(link, ftp, opts, inv))
    if params is not None:
        inv.measurements.append(params)
    if ident is not None:
        try:
            image = _timed(inv, "image", lambda: collect_image(ftp, ident, opts, cache, inv))
            if image is not None:
                inv.measurements.append(image)
        except LinkLost:
            raise
        except (CollectError, FtpError) as exc:
            inv.missing(IMAGE, str(exc))
    else:
        inv.missing(IMAGE, "not measured: the firmware identity is unknown")
    inv.measurements.extend(_timed(inv, "components", lambda: collect_components(link, opts, inv)))
    try:
        inv.measurements.extend(_timed(inv, "companion", lambda: collect_companion(opts)))
    except CollectError as exc:
        inv.missing("companion.agent", str(exc))
    inv.measurements.append(collect_posture(link, inv))
    return inv


def _unlisted_scripts() -> Measurement:
    return Measurement(f"{SCRIPTS}*", Kind.SCRIPT, {}, "mavlink-ftp", Strength.SELF_REPORTED,
                       {"path": "*", "error": "MAVLink FTP does not answer: the scripts could not be listed"})


__all__ = ["PARAMS", "measure"]
