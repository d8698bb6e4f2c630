"""Desktops that another replica runs, reached from this one (docs/scale-out.md, "Frames and VNC from any
replica").

The lease holder records its desktop's endpoint (address and token) next to the lease; a replica with viewers
of the session builds a ``DesktopClient`` from it to pump frames and proxy VNC, re-reading the endpoint every
``refresh_s`` so that a failover (a new desktop elsewhere) or a released desktop is noticed. Input-capable VNC
connections opened here are closed once the session's row no longer says that the same takeover holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from deskpilot.errors import NotFound
from desktop.client import DesktopClient, DesktopEndpoint
from web.leases import Leases
from web.store import Store

log = logging.getLogger(__name__)
# Frames and the VNC bridge answer fast; a daemon that does not is as good as gone for a viewer.
REMOTE_TIMEOUT_S = 30.0
# Events after which the agent's action runs on the desktop, and after which it does not (anymore).
_ACTS = ("approve", "edit", "allow")
_IDLE = ("tool_result", "approval_requested", "status")


@dataclass
class _Cached:
    endpoint: DesktopEndpoint
    client: DesktopClient
    read_at: float


class RemoteDesktops:
    def __init__(self, leases: Leases, store: Store, refresh_s: float) -> None:
        self.leases, self.store, self.refresh_s = leases, store, refresh_s
        self._cache: dict[str, _Cached] = {}
        self._lock = asyncio.Lock()
        self._closed = False
        self._acting: set[str] = set()
        self._inputs: dict[str, dict[asyncio.Event, datetime | None]] = {}  # kick -> the takeover it was opened in

    # --- the desktop ---
    async def client(self, session_id: str, *, fresh: bool = False) -> DesktopClient | None:
        """A client of the session's desktop, wherever it runs; None while no replica has one up. The endpoint
        is read again after ``refresh_s``, or now with ``fresh`` (a VNC connection is opened only to a desktop
        that is up)."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._closed:  # the replica is stopping
                return None
            cached = self._cache.get(session_id)
            if cached is not None and not fresh and loop.time() - cached.read_at < self.refresh_s:
                return cached.client
            endpoint = await self.leases.desktop(session_id)
            if cached is not None and cached.endpoint == endpoint:
                cached.read_at = loop.time()
                return cached.client
            if cached is not None:
                del self._cache[session_id]
                await cached.client.aclose()
            if endpoint is None:
                return None
            client = DesktopClient.to(endpoint, timeout_s=REMOTE_TIMEOUT_S)
            self._cache[session_id] = _Cached(endpoint, client, loop.time())
            return client

    def vnc_available(self, session_id: str) -> bool:
        """Whether the desktop ``client`` last returned runs a VNC server."""
        cached = self._cache.get(session_id)
        return cached is not None and cached.endpoint.vnc

    async def prune(self, keep: Iterable[str]) -> None:
        """Close the clients of sessions nobody here watches any more."""
        wanted = set(keep) | set(self._inputs)
        async with self._lock:
            for session_id in [s for s in self._cache if s not in wanted]:
                await self._cache.pop(session_id).client.aclose()
        self._acting &= wanted

    async def aclose(self) -> None:
        async with self._lock:
            self._closed = True
            cached, self._cache = list(self._cache.values()), {}
        for entry in cached:
            with contextlib.suppress(Exception):
                await entry.client.aclose()

    # --- whether the agent acts (the holder slows frames then, so that watching never slows the agent) ---
    def observe(self, session_id: str, type: str, data: dict[str, Any]) -> None:
        """Follow the session's events as they are fanned out to this replica's viewers."""
        if type == "tool_call" or (type == "approval_decided" and data.get("decision") in _ACTS):
            self._acting.add(session_id)
        elif type in _IDLE:
            self._acting.discard(session_id)

    def acting(self, session_id: str) -> bool:
        return session_id in self._acting

    # --- input-capable VNC connections ---
    def open_input(self, session_id: str, taken_over_at: datetime | None) -> asyncio.Event:
        """Register an input-capable connection opened under the takeover that began at ``taken_over_at``;
        the event is set when that takeover ends (``check``)."""
        kick = asyncio.Event()
        self._inputs.setdefault(session_id, {})[kick] = taken_over_at
        return kick

    def close_input(self, session_id: str, kick: asyncio.Event) -> None:
        inputs = self._inputs.get(session_id, {})
        inputs.pop(kick, None)
        if not inputs:
            self._inputs.pop(session_id, None)

    def with_inputs(self) -> list[str]:
        return list(self._inputs)

    async def check(self, session_id: str) -> None:
        """Kick the session's input connections whose takeover is over (handed back, interrupted, ended)."""
        inputs = self._inputs.get(session_id)
        if not inputs:
            return
        try:
            row = await self.store.get_session(session_id)
            holds: tuple[str, datetime | None] = (row.control, row.taken_over_at)
        except NotFound:  # deleted meanwhile
            holds = ("agent", None)
        for kick, taken_over_at in list(inputs.items()):
            if holds != ("user", taken_over_at):
                log.info("session %s: control handed back, closing an input VNC connection", session_id)
                kick.set()
