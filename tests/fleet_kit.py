"""A fleet for the web tests: a trust directory on disk and real attestations from enrolled airframes.

Everything is signed with the real code (tests/factory.py's world: a 2-of-3 root, a manifest, software
device keys); the service verifies each attestation as it would a real one. ``tampered`` attestations
are signed by the device too, but measure a gate script the manifest does not approve, so the
verdict fails with a reason code rather than a broken signature.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.attestation import check_manifest, seal_measurements
from attest.manifest import Airframe
from hardware.software import SoftwareSigner
from tests.factory import World, measurements

EVIL_GATE = b"-- flightseal gate (patched to always allow arming)\nreturn function() return true end\n"


@dataclass
class Fleet:
    trust: Path
    device_ids: tuple[str, ...]
    world: World = field(default_factory=lambda: World(now=datetime.now(UTC).replace(microsecond=0)))
    keys: dict[str, SoftwareSigner] = field(default_factory=dict)

    def __post_init__(self) -> None:
        w = self.world
        self.keys = {d: SoftwareSigner.generate() for d in self.device_ids}
        manifest = w.manifest()
        self.manifest_bytes = w.sign_manifest(replace(manifest, airframe=Airframe(
            "FS-Quad-1", board_ids=(0,), device_ids=self.device_ids)))
        (self.trust / "devices").mkdir(parents=True, exist_ok=True)
        (self.trust / "root.json").write_bytes(w.root_bytes())
        (self.trust / "manifest.json").write_bytes(self.manifest_bytes)
        for device_id, key in self.keys.items():
            (self.trust / "devices" / f"{device_id}.json").write_bytes(
                w.enrollment_bytes(w.device(device_id, key)))

    def attestation(self, device_id: str, *, tampered: bool = False, nonce: bytes | None = None) -> bytes:
        ms = measurements(gate=EVIL_GATE) if tampered else measurements()
        status = check_manifest(self.world.trust(), self.manifest_bytes, self.world.now)
        sealed = seal_measurements(ms, status, self.keys[device_id], device_id=device_id, airframe="FS-Quad-1",
                                   nonce=nonce or secrets.token_bytes(32), now=datetime.now(UTC))
        return sealed.envelope.to_bytes()


def make_fleet(tmp: Path, count: int = 3) -> Fleet:
    return Fleet(tmp / "trust", tuple(f"drone-{i:03d}" for i in range(1, count + 1)))


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on 127.0.0.1 (a free port) in a thread; yield its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 10 s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def service(tmp: Path, fleet: Fleet, url: str | None = None, **app_options: Any) -> tuple[Any, Any]:
    """A migrated database (``url``, or a SQLite file in ``tmp``) and the fleet app over it (software
    device keys allowed)."""
    from fleet.config import FleetConfig
    from fleet.db import database_url, make_engine
    from fleet.migrate import upgrade
    from fleet.store import FleetStore
    from fleet.web.app import create_app

    url = url or database_url(str(tmp / "fleet.db"))
    upgrade(url)
    engine = make_engine(url)
    store = FleetStore(engine, fleet.trust, config=FleetConfig(allow_software_keys=True))
    return create_app(store, engine=engine, **app_options), engine
