"""One measurement pass over an open link: every collector, in an order that shares the link well.

Order: firmware identity first (it decides the image cache key and whether a SITL binary
applies), then FTP work (scripts, parameters, image), then the components (which by then have
been heard for a while), then the companion. Each collector's failure is recorded and the pass
goes on; only a lost link ends it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from agent.mavlink.ftp import FtpClient, FtpError, FtpLimits
from agent.mavlink.ids import MAV_AUTOPILOT_PX4, MAV_CMD_REQUEST_MESSAGE, MAV_STATE_BOOT, MAV_STATE_UNINIT
from agent.mavlink.link import Link, LinkLost
from agent.measure import companion, components, firmware, params, posture, px4, scripts
from agent.measure.base import CollectError, Collector, Inventory, MeasureOptions, Pass
from agent.measure.imagecache import ImageCache
from agent.measure.params import COMPONENT as PARAMS
from attest import params as paramdigest

T = TypeVar("T")


def _timed(inv: Inventory, name: str, fn: Callable[[], T]) -> T:
    start = time.monotonic()
    try:
        return fn()
    finally:
        inv.timings[name] = round(time.monotonic() - start, 3)


STARTING = (MAV_STATE_UNINIT, MAV_STATE_BOOT)  # PX4 says UNINIT for ~3 s after start (SITL), ArduPilot BOOT


def wait_booted(link: Link, timeout: float) -> bool:
    """Wait (bounded) until the FC's heartbeat leaves MAV_STATE_BOOT (ArduPilot) or UNINIT (PX4).

    Measured during boot, ArduPilot is in flux: right after a reboot SITL served a param.pck whose
    header counted 1358 parameters while the scripting ones were still appearing (1368 a second
    later), and calibration values are still 0. So a pass waits for the FC to be up.
    """
    deadline = time.monotonic() + timeout
    tsys, tcomp = link.fc
    while link.fc_heartbeat is None or link.fc_heartbeat.system_status in STARTING:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        # ask for a heartbeat rather than wait up to a second for the next 1 Hz one (SITL answers)
        link.send(link.mav.command_long_encode(tsys, tcomp, MAV_CMD_REQUEST_MESSAGE, 0, 0.0, 0, 0, 0, 0, 0, 0))
        link.recv(["HEARTBEAT"], min(remaining, 0.25), lambda m: (m.get_srcSystem(), m.get_srcComponent()) == link.fc)
    return True


# The pass, in order: firmware identity first (it keys the image cache and decides whether a SITL
# binary applies), then FTP work (scripts, parameters, the image), then the components (heard for a
# while by then), the companion, and last the link posture (it reads what the others found).
COLLECTORS: tuple[Collector, ...] = (firmware.IDENTITY_COLLECTOR, scripts.COLLECTOR, params.COLLECTOR,
                                     firmware.IMAGE_COLLECTOR, components.COLLECTOR, companion.COLLECTOR,
                                     posture.COLLECTOR)


# PX4's pass (agent/measure/px4.py), then its posture: whether PX4 still asks this agent before arming.
PX4_COLLECTORS: tuple[Collector, ...] = (*px4.COLLECTORS, posture.PX4_COLLECTOR)


def for_fc(link: Link, opts: MeasureOptions) -> tuple[tuple[Collector, ...], MeasureOptions]:
    """The collectors of the FC on ``link`` (ArduPilot's or PX4's, by its HEARTBEAT's ``autopilot``),
    and ``opts`` with that FC's volatile parameters as the exclusions when no manifest chose others."""
    hb = link.fc_heartbeat
    if hb is not None and int(hb.autopilot) == MAV_AUTOPILOT_PX4:
        if opts.param_exclusions == paramdigest.DEFAULT_EXCLUSIONS:  # ArduPilot's names mean nothing on PX4
            opts = replace(opts, param_exclusions=px4.VOLATILE_PARAMS)
        return PX4_COLLECTORS, opts
    return COLLECTORS, opts


def measure(link: Link, opts: MeasureOptions | None = None, cache: ImageCache | None = None,
            ftp_limits: FtpLimits | None = None, collectors: Sequence[Collector] | None = None) -> Inventory:
    """One measurement pass: every collector of the table (by default the FC's own, see
    :func:`for_fc`), each failure recorded as a ``measurement-missing`` reason while the pass goes on.

    Raises:
        LinkLost: the link to the FC dropped; every later collector would fail the same way.
    """
    opts = opts or MeasureOptions()
    own, opts = for_fc(link, opts)
    collectors = own if collectors is None else collectors
    p = Pass(link, opts, Inventory(), cache=cache)
    inv = p.inv
    if not _timed(inv, "boot-wait", lambda: wait_booted(link, opts.boot_wait)):
        inv.missing("fc", f"the FC was still booting after {opts.boot_wait:.0f} s; measured anyway")
    if link.config.signing_key is not None and not getattr(link.fc_heartbeat, "_signed", False):
        # the link drops the FC's unsigned answers: every request would time out, and nothing it said
        # could be trusted anyway; say so at once (the posture names it: posture-unsigned)
        inv.missing("fc", "the FC no longer signs its packets (signing removed or another key): nothing it says "
                          "is measured; set signing up again (`flightseal signing setup`)")
        inv.measurements.extend(posture.COLLECTOR.collect(p))
        return inv
    p.ftp = FtpClient(link, ftp_limits)
    try:
        _timed(inv, "ftp-reset", p.ftp.reset_sessions)
    except FtpError as exc:
        inv.missing("fc.ftp", f"MAVLink FTP does not answer ({exc}); scripts, parameters and image read "
                              "fall back or are missing")
        p.ftp = None
    for collector in collectors:
        _run(collector, p)
    return inv


def _run(collector: Collector, p: Pass) -> None:
    try:
        p.inv.measurements.extend(_timed(p.inv, collector.name, lambda: collector.collect(p)))
    except LinkLost:
        raise  # the one handler that ends the pass
    except (CollectError, FtpError) as exc:
        p.inv.missing(collector.component, str(exc))


__all__ = ["COLLECTORS", "PARAMS", "measure"]
