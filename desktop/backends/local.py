"""The ``local`` backend: each desktop is a ``deskpilot desktopd`` subprocess on this host.

The embedded default and the test backend. Desktops never collide (``Xvfb -displayfd`` picks free
displays; each daemon has its own private socket directory and token). Each desktop gets its own egress
proxy on a loopback port; its browser and shell are pointed at it (what that cannot hold: docs/security.md).
"""

from __future__ import annotations

import asyncio
import itertools

from deskpilot.settings import Settings
from desktop.backends.base import DesktopHandle
from desktop.egress_proxy import EgressProxy, start_proxy
from desktop.local import LocalDesktop


class LocalBackend:
    def __init__(self, settings: Settings, *, kiosk: bool = False) -> None:
        self.settings = settings
        self.kiosk = kiosk
        self._live: dict[str, tuple[LocalDesktop, EgressProxy]] = {}
        self._ids = itertools.count(1)

    async def start(self) -> None:
        """Nothing to prepare: each desktop starts when a session asks for it."""

    async def acquire(self, session_id: str, width: int, height: int) -> DesktopHandle:
        proxy = await start_proxy(self.settings).start()
        desktop = LocalDesktop(width, height, start_url=self.settings.browser_start_url,
                               data_dir=self.settings.data_dir, kiosk=self.kiosk, settings=self.settings,
                               proxy=proxy.address)
        try:
            await desktop.start()  # stops itself and raises DesktopStartError when it cannot come up
        except BaseException:
            await proxy.aclose()
            raise
        handle = DesktopHandle(id=f"local-{next(self._ids)}-{desktop.pid}", client=desktop.client,
                               vnc_available=True, session_id=session_id, egress=proxy,
                               extra={"display": desktop.display})
        self._live[handle.id] = (desktop, proxy)
        return handle

    async def release(self, handle: DesktopHandle) -> None:
        live = self._live.pop(handle.id, None)
        if live is not None:
            await live[0].stop()
            await live[1].aclose()

    async def aclose(self) -> None:
        held, self._live = list(self._live.values()), {}
        await asyncio.gather(*(desktop.stop() for desktop, _ in held))
        await asyncio.gather(*(proxy.aclose() for _, proxy in held))

    def __len__(self) -> int:
        return len(self._live)
