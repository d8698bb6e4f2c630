"""Live screen frames: one pump per watched session fetches JPEGs from the desktop and fans them out.

Frames are fetched only while someone watches, at most ``frame_fps`` a second; the daemon answers 304 for an
unchanged screen (``If-None-Match``), so an idle desktop costs one cheap request per tick and sends nothing.
While the agent's action runs, the desktop's capture is the agent's: frames slow to ``ACTING_FPS`` so that
watching does not slow the agent down. The desktop may be another replica's (``web/remote.py``): its pump runs
on whichever replica has the viewers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from desktop.client import DesktopClient
from web.bus import Bus

log = logging.getLogger(__name__)
ACTING_FPS = 2.0


class FramePumps:
    def __init__(self, bus: Bus, fps: float, client_of: Callable[[str], Awaitable[DesktopClient | None]],
                 acting: Callable[[str], bool] = lambda _sid: False) -> None:
        self.bus = bus
        self.interval = 1.0 / fps
        self.acting_interval = max(self.interval, 1.0 / ACTING_FPS)
        self.client_of = client_of  # session id -> its DesktopClient, or None while it has no desktop up
        self.acting = acting  # session id -> whether an agent action is running right now
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def watch(self, session_id: str) -> None:
        """Start the session's pump if it has viewers (idempotent); it ends at once when there is no desktop."""
        if session_id in self._tasks or not self.bus.viewer_count(session_id):
            return
        self._tasks[session_id] = asyncio.get_running_loop().create_task(self._pump(session_id))

    def stop(self, session_id: str) -> None:
        task = self._tasks.pop(session_id, None)
        if task is not None:
            task.cancel()

    def all_tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks.values())

    async def _pump(self, session_id: str) -> None:
        loop = asyncio.get_running_loop()
        etag: str | None = None
        try:
            while self.bus.viewer_count(session_id):
                try:
                    client = await self.client_of(session_id)
                except Exception as exc:  # the database, for another replica's desktop: its next tick retries
                    log.warning("cannot find the desktop of session %s: %r", session_id, exc)
                    return
                if client is None:
                    return
                started = loop.time()
                try:
                    got = await client.frame(etag)
                except Exception as exc:  # a frame is best effort; the agent's own calls report desktop loss
                    log.debug("frame fetch failed: %r", exc)
                    got = None
                if got is not None:
                    jpeg, etag = got
                    self.bus.publish_frame(session_id, jpeg)
                interval = self.acting_interval if self.acting(session_id) else self.interval
                await asyncio.sleep(max(0.0, interval - (loop.time() - started)))
        finally:
            if self._tasks.get(session_id) is asyncio.current_task():
                del self._tasks[session_id]
