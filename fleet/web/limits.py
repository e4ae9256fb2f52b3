"""Bounds on what one client may send: the size of a request body and the rate of intake.

Both are checked before any parsing or verification, so a flood of large or frequent requests
costs the service a counter, not a signature check. The rate limit is a token bucket per client
address, kept in this process's memory: with several worker processes each has its own buckets,
so the effective limit is per process (docs/fleet.md says how to bound it at the proxy instead).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from attest.limits import LIMITS

MAX_INTAKE_BYTES = LIMITS.max_envelope_bytes  # the verifier's own bound: nothing it would accept is refused here
MAX_FORM_BYTES = 64 * 1024
MAX_JSON_BYTES = 16 * 1024
MAX_CLIENTS = 10_000  # buckets kept; the least recently seen client is forgotten first


class BodyTooLarge(Exception):
    """The request body is larger than the route allows (HTTP 413)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"request body is larger than {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read at most ``limit`` bytes far: a declared or actual larger body raises BodyTooLarge."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class RateLimit:
    """``rate`` requests per second sustained, ``burst`` at once, per client address."""

    rate: float = 50.0
    burst: int = 100


class RateLimiter:
    """Token buckets per client; ``check`` answers 0 (go ahead) or the seconds to wait."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, client: str) -> int:
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self._limit.burst), now))
            tokens = min(float(self._limit.burst), tokens + (now - last) * self._limit.rate)
            wait = 0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = max(1, math.ceil((1.0 - tokens) / self._limit.rate))
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)
            return wait


def client_key(request: Request) -> str:
    """The client's address as the ASGI server saw it (uvicorn applies X-Forwarded-For only from trusted proxies)."""
    return request.client.host if request.client else "unknown"
