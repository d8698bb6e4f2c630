"""WS /api/sessions/{id}/stream: every event as JSON with its ``seq`` (stored ones first, from ``after``),
then live; screen frames as binary JPEG messages while the viewer is connected.

The viewer subscribes to the bus *before* reading the stored log, and every event is stored before it
is broadcast, so the replay and the live part overlap instead of leaving a gap; duplicates are skipped by seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from web.bus import Bus, Viewer
from web.recorder import stream_message
from web.routes.sessions import session_out
from web.routes.wsguard import guard
from web.store import Store

router = APIRouter()


@router.websocket("/api/sessions/{session_id}/stream")
async def stream(websocket: WebSocket, session_id: str) -> None:
    checked = await guard(websocket, session_id)
    if checked is None:
        return
    _, row = checked
    try:
        after = max(0, int(websocket.query_params.get("after", "0")))
    except ValueError:
        after = 0
    store: Store = websocket.app.state.store
    bus: Bus = websocket.app.state.bus
    await websocket.accept()
    viewer = bus.subscribe(session_id)
    hello = {"kind": "hello", "session": (await session_out(store, row)).model_dump(mode="json")}
    sender = asyncio.create_task(_send(websocket, store, viewer, after, hello))
    reader = asyncio.create_task(_read(websocket))
    gone = asyncio.create_task(viewer.gone.wait())
    try:
        await asyncio.wait({sender, reader, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        bus.unsubscribe(viewer)
        for task in (sender, reader, gone):
            task.cancel()
        dropped = viewer.dropped and not reader.done()
        with contextlib.suppress(Exception):
            # A stuck viewer's socket may not even take these: never wait on it for long.
            if dropped:
                note = {"kind": "dropped", "reason": "too slow: reconnect with after=<last seq>"}
                await asyncio.wait_for(websocket.send_text(json.dumps(note)), 1)
            await asyncio.wait_for(websocket.close(code=1013 if dropped else 1000), 2)


async def _send(websocket: WebSocket, store: Store, viewer: Viewer, after: int, hello: dict[str, Any]) -> None:
    await websocket.send_text(json.dumps(hello))  # one sender per socket: messages never interleave
    last = after
    while True:  # the stored log, page by page
        page = await store.events_after(viewer.session_id, last, limit=500)
        for ev in page:
            await websocket.send_text(json.dumps(stream_message(ev)))
            last = ev.seq
        if len(page) < 500:
            break
    while True:
        item = await viewer.next()
        if item is None:
            return
        if isinstance(item, bytes):
            await websocket.send_bytes(item)
        elif int(item["seq"]) > last:
            await websocket.send_text(json.dumps(item))
            last = int(item["seq"])


async def _read(websocket: WebSocket) -> None:
    """Viewers send nothing we need; reading notices a disconnect (and enforces the size cap in uvicorn)."""
    with contextlib.suppress(WebSocketDisconnect):
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
