"""The virtual FC's parameter table, seeded from parameters captured from real ArduCopter SITL.

Order matters: PARAM_VALUE ``param_index`` and the records of ``param.pck`` follow AP_Param's
token order, which the data file keeps. As in ArduPilot, the ``SCR_*`` parameters other than
``SCR_ENABLE`` exist only while scripting is enabled (decided at boot), and integer types are
set the way ``AP_Param::set_float`` does (add ±0.01, clamp, truncate).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from importlib import resources

from agent.measure.parampck import AP_FLOAT, AP_INT8, AP_INT16, AP_INT32, MAV_TYPE_OF_AP
from sim.vfc.parampck import encode

DATA_FILE = "copter-4.7.0-params.json"
CAN_DATA_FILE = "copter-4.7.0-can1-params.json"  # what appears once CAN bus 1 runs DroneCAN
_LIMITS = {AP_INT8: (-128, 127), AP_INT16: (-32768, 32767), AP_INT32: (-2**31, 2**31 - 1)}


@dataclass
class Param:
    name: str
    ap_type: int
    value: int | float

    @property
    def mav_type(self) -> int:
        return MAV_TYPE_OF_AP[self.ap_type]

    def as_float(self) -> float:
        return float(struct.unpack("<f", struct.pack("<f", float(self.value)))[0])


def load_seed() -> tuple[list[Param], frozenset[str]]:
    text = resources.files("sim.vfc").joinpath("data", DATA_FILE).read_text()
    doc = json.loads(text)
    params = [Param(str(n), int(t), v if int(t) == AP_FLOAT else int(v)) for n, t, v in doc["params"]]
    return params, frozenset(doc["scripting_only"])


def with_can_bus1(params: list[Param]) -> list[Param]:
    """The table SITL has when booted with CAN_P1_DRIVER 1: bus and DroneCAN driver parameters added."""
    doc = json.loads(resources.files("sim.vfc").joinpath("data", CAN_DATA_FILE).read_text())
    out = list(params)
    for group in doc["groups"]:
        at = next(i for i, p in enumerate(out) if p.name == group["after"]) + 1
        out[at:at] = [Param(str(n), int(t), v if int(t) == AP_FLOAT else int(v)) for n, t, v in group["params"]]
    return out


class ParamTable:
    """Name → typed value, in token order; what is visible depends on SCR_ENABLE at boot."""

    def __init__(self, overrides: dict[str, float] | None = None) -> None:
        seed, self.scripting_only = load_seed()
        if (overrides or {}).get("CAN_P1_DRIVER", 0) >= 1:  # decided at boot, as ArduPilot allocates drivers
            seed = with_can_bus1(seed)
        self._all = seed
        self._by_name = {p.name: p for p in seed}
        self._saved: dict[str, int | float] = {}  # value in storage of each parameter set in memory only
        for name, value in (overrides or {}).items():
            if name not in self._by_name:
                raise KeyError(f"unknown parameter {name}")
            self._set(self._by_name[name], value)
        self.visible: list[Param] = []
        self.boot()

    def boot(self) -> None:
        for name, value in self._saved.items():  # what was set in memory only is gone after a reboot
            self._by_name[name].value = value
        self._saved.clear()
        scripting = bool(self._by_name["SCR_ENABLE"].value) if "SCR_ENABLE" in self._by_name else False
        self.visible = [p for p in self._all if scripting or p.name not in self.scripting_only]
        self._index = {p.name: i for i, p in enumerate(self.visible)}

    def __len__(self) -> int:
        return len(self.visible)

    def get(self, name: str) -> Param | None:
        i = self._index.get(name)
        return None if i is None else self.visible[i]

    def at(self, index: int) -> Param | None:
        return self.visible[index] if 0 <= index < len(self.visible) else None

    def index_of(self, name: str) -> int:
        return self._index[name]

    def set(self, name: str, value: float) -> Param | None:
        """Set a visible parameter as PARAM_SET does; None when unknown or not finite."""
        p = self.get(name)
        if p is None or math.isnan(value) or math.isinf(value):
            return None
        self._set(p, value)
        self._saved.pop(name, None)  # PARAM_SET saves
        return p

    def set_in_memory(self, name: str, value: float) -> Param | None:
        """Set a visible parameter without saving it, as ``AP_Param::set`` does: no PARAM_VALUE goes
        out, and a reboot brings back the stored value."""
        p = self.get(name)
        if p is None:
            return None
        self._saved.setdefault(name, p.value)
        self._set(p, value)
        return p

    def set_hidden_ok(self, name: str, value: float) -> None:
        """Set any known parameter, visible or not (a test preparing the next boot)."""
        self._set(self._by_name[name], value)

    @staticmethod
    def _set(p: Param, value: float) -> None:
        if p.ap_type == AP_FLOAT:
            p.value = float(struct.unpack("<f", struct.pack("<f", float(value)))[0])
            return
        lo, hi = _LIMITS[p.ap_type]
        v = value + (0.01 if value >= 0 else -0.01)
        p.value = int(max(lo, min(hi, v)))

    @property
    def count_at_boot(self) -> int:
        """The count ArduPilot announces while booting: scripting has not added its parameters yet
        (SITL right after a reboot: header 1358, records 1368)."""
        return len([p for p in self.visible if p.name not in self.scripting_only])

    def pack(self, read_size: int, booting: bool = False) -> bytes:
        announce = self.count_at_boot if booting else None
        return encode([(p.name, p.ap_type, p.value) for p in self.visible], read_size, announce=announce)


__all__ = ["AP_FLOAT", "AP_INT8", "AP_INT16", "AP_INT32", "Param", "ParamTable"]
