"""A session's side of its desktop's egress proxy: the session's ``policy.network`` applied once the desktop
is up, refusals turned into ``egress_blocked`` events, and a person's one-click "allow this host" applied to
the running proxy, kept in the session's policy (a resumed run starts with it) and in the audit log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agent.events import EgressAllowedData, EgressBlockedData, Emit, Event
from deskpilot.errors import Conflict
from deskpilot.settings import Settings
from desktop.egress_policy import NetworkPolicy, normalize_host
from desktop.egress_proxy import Blocked, EgressProxy

log = logging.getLogger(__name__)


def approval_spec(spec: Any) -> Any:
    """The part of a session's policy the approval policy reads (everything but ``network``)."""
    return {k: v for k, v in spec.items() if k != "network"} if isinstance(spec, dict) else spec


def network_policy(settings: Settings, spec: Any) -> NetworkPolicy:
    """``policy.network`` of a session, the settings' defaults filling what it leaves out; ``PolicyError``."""
    network = spec.get("network") if isinstance(spec, dict) else None
    return NetworkPolicy.from_spec(network, settings.egress_allow, settings.egress_deny)


def with_allowed(spec: dict[str, Any], settings: Settings, host: str) -> dict[str, Any]:
    """The session's stored policy with ``host`` added to ``network.allow`` (spelled out in full, so a later
    change of the settings' default does not change what this session was allowed)."""
    network = dict(spec.get("network") or {})
    allow = list(network.get("allow", settings.egress_allow))
    if host not in allow:
        allow.append(host)
    network["allow"] = allow
    return {**spec, "network": network}


class EgressWatch:
    """Connects one running session to its desktop's proxy (None when the backend has no proxy)."""

    def __init__(self, proxy: EgressProxy | None, emit: Emit) -> None:
        self.proxy = proxy
        self._emit = emit
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, policy: NetworkPolicy) -> None:
        if self.proxy is None:
            return
        self.proxy.set_policy(policy)
        self.proxy.on_blocked = self._blocked

    def _blocked(self, item: Blocked) -> None:
        data: EgressBlockedData = {"host": item.host, "port": item.port, "method": item.method, "url": item.url,
                                   "reason": "deny" if item.reason == "deny" else "not_allowed"}
        task = asyncio.get_running_loop().create_task(self._record(Event("egress_blocked", data)))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def _record(self, event: Event) -> None:
        await self._emit(event)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("recording an egress_blocked event failed: %r", task.exception())

    async def allow(self, host: str, by: str) -> str:
        """Allow ``host`` on the running proxy; returns its normalized name. ``PolicyError`` for a bad name,
        ``Conflict`` when the desktop has no proxy or a deny entry would still block it."""
        if self.proxy is None:
            raise Conflict("this session's desktop has no egress proxy to change")
        name = normalize_host(host)
        if self.proxy.policy.deny.matches(name, None):
            raise Conflict(f"{name} is on the session's deny list: a deny entry wins over allow")
        self.proxy.allow(name)
        data: EgressAllowedData = {"host": name, "by": by}
        await self._emit(Event("egress_allowed", data))
        return name

    def detach(self) -> None:
        if self.proxy is not None:
            self.proxy.on_blocked = None
        for task in list(self._tasks):
            task.cancel()
