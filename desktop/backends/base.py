"""What a desktop backend is: something that hands out desktops for sessions and takes them back.

``local`` runs each desktop as a subprocess on this host; ``docker`` runs one container per session.
Nothing above ``desktop/`` knows which one is in use: it only sees a ``DesktopHandle`` and its client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from desktop.client import DesktopClient
from desktop.egress_proxy import EgressProxy


@dataclass(eq=False)
class DesktopHandle:
    """One acquired desktop. ``client`` talks to its daemon; ``id`` is unique within the backend.

    ``vnc_available`` says whether ``client.vnc_connect`` can work (the daemon runs x11vnc).
    ``egress`` is its egress proxy, whose policy the session sets and widens (None: the backend has none).
    ``extra`` holds backend-private state (a process, a container) the backend needs to release it.
    """

    id: str
    client: DesktopClient
    vnc_available: bool = True
    session_id: str = ""
    egress: EgressProxy | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class DesktopBackend(Protocol):
    async def start(self) -> None:
        """Get ready before the first session asks (orphan clean-up, a warm pool). Raises ``DeskpilotError``."""
        ...

    async def acquire(self, session_id: str, width: int, height: int) -> DesktopHandle:
        """Start (or take from a pool) a desktop of ``width × height`` for ``session_id``; ready when returned.

        Raises ``DesktopStartError`` when it cannot come up.
        """
        ...

    async def release(self, handle: DesktopHandle) -> None:
        """Stop the desktop and free everything it held. Idempotent; never raises for a dead desktop."""
        ...

    async def aclose(self) -> None:
        """Release every desktop still held (service shutdown)."""
        ...

