"""Token buckets: requests per API token, and failed logins per client address.

Failed logins are counted per address (IPv6 per /64, which one machine usually holds whole), so an attacker
guessing tokens slows only themself: a user elsewhere can still log in. Only a *wrong* credential counts; a
request with none (a browser that is not logged in yet) does not.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict

from deskpilot.errors import TooManyRequests


class TokenBuckets:
    """``per_minute`` refills a minute, up to ``burst``; at most ``max_keys`` buckets are kept (oldest go first)."""

    def __init__(self, per_minute: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def level(self, key: str) -> float:
        now = time.monotonic()
        level, last = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, level + (now - last) * self.rate)

    def take(self, key: str) -> bool:
        """Take one; False (and nothing taken) when the bucket is empty."""
        level = self.level(key)
        ok = level >= 1.0
        self._buckets[key] = (level - 1.0 if ok else level, time.monotonic())
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)  # a forgotten bucket is a full one: errs towards letting in
        return ok

    def wait_s(self, key: str) -> int:
        """Whole seconds until one is available again."""
        return max(1, math.ceil((1.0 - self.level(key)) / self.rate))


class RateLimiter:
    """A token bucket per API token: ``per_minute`` requests, with that many as the burst."""

    def __init__(self, per_minute: int) -> None:
        self._buckets = TokenBuckets(per_minute, per_minute)

    def check(self, key: str) -> None:
        if not self._buckets.take(key):
            raise TooManyRequests("rate limit exceeded; slow down", retry_after=self._buckets.wait_s(key))


def address_key(host: str | None) -> str:
    """The client address as counted: IPv4 as is, IPv6 by its /64 network."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address.ipv4_mapped or address) if isinstance(address, ipaddress.IPv6Address) else str(address)


class LoginThrottle:
    """``per_minute`` failed logins per address, ``burst`` at once; then every attempt from there gets a 429."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self._buckets = TokenBuckets(per_minute, burst)

    def check(self, address: str) -> None:
        """Before a credential is looked at: refuse while this address has used up its failures."""
        if self._buckets.level(address) < 1.0:
            raise TooManyRequests(
                "too many failed logins from this address; try again later", retry_after=self._buckets.wait_s(address)
            )

    def failed(self, address: str) -> None:
        self._buckets.take(address)
