"""Per-session broadcast to live viewers.

Each viewer has a bounded queue of event messages and a single slot for the newest screen frame.
Publishing never waits: a viewer whose queue is full is marked dropped (its socket gets closed by
its own task) — a slow or stuck viewer never slows the agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge

VIEWERS = Gauge("deskpilot_viewers", "Connected live viewers")
DROPPED = Counter("deskpilot_viewers_dropped_total", "Viewers dropped for not keeping up")
FRAMES_SENT = Counter("deskpilot_frames_published_total", "Screen frames offered to viewers")


class Viewer:
    def __init__(self, session_id: str, maxsize: int) -> None:
        self.session_id = session_id
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize)
        self.frame: bytes | None = None
        self.dropped = False
        self.gone = asyncio.Event()  # set once dropped: the viewer's socket task stops even mid-send
        self._wake = asyncio.Event()

    def offer_event(self, message: dict[str, Any]) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped = True
            self.gone.set()
            DROPPED.inc()
        self._wake.set()

    def offer_frame(self, jpeg: bytes) -> None:
        self.frame = jpeg  # only the newest frame matters; an unsent older one is simply replaced
        self._wake.set()

    async def next(self) -> dict[str, Any] | bytes | None:
        """The next thing to send — events before frames — or None once dropped."""
        while True:
            if self.dropped:
                return None
            if not self.queue.empty():
                return self.queue.get_nowait()
            if self.frame is not None:
                frame, self.frame = self.frame, None
                return frame
            self._wake.clear()
            await self._wake.wait()


class Bus:
    def __init__(self, viewer_queue_size: int) -> None:
        self.viewer_queue_size = viewer_queue_size
        self._viewers: dict[str, set[Viewer]] = {}
        self.on_watch: Callable[[str], None] | None = None  # called when a session gains its first viewer

    def subscribe(self, session_id: str) -> Viewer:
        viewer = Viewer(session_id, self.viewer_queue_size)
        viewers = self._viewers.setdefault(session_id, set())
        viewers.add(viewer)
        VIEWERS.inc()
        if len(viewers) == 1 and self.on_watch is not None:
            self.on_watch(session_id)
        return viewer

    def unsubscribe(self, viewer: Viewer) -> None:
        viewers = self._viewers.get(viewer.session_id)
        if viewers is None or viewer not in viewers:
            return
        viewers.discard(viewer)
        VIEWERS.dec()
        if not viewers:
            del self._viewers[viewer.session_id]

    def viewer_count(self, session_id: str) -> int:
        return len(self._viewers.get(session_id, ()))

    def publish(self, session_id: str, message: dict[str, Any]) -> None:
        for viewer in list(self._viewers.get(session_id, ())):
            viewer.offer_event(message)

    def publish_frame(self, session_id: str, jpeg: bytes) -> None:
        viewers = self._viewers.get(session_id, ())
        for viewer in list(viewers):
            viewer.offer_frame(jpeg)
        if viewers:
            FRAMES_SENT.inc()
