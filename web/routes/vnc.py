"""WS /api/sessions/{id}/vnc: the RFB protocol for noVNC, through the desktop daemon's bridge.

Input is allowed only on a connection opened while the session's owner holds control (after takeover);
every other connection is opened with the daemon's ``view_only=1``, so the bridge drops key and pointer
messages on the server. Handback closes the input-capable connections; the UI reconnects view-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection

from web.routes.wsguard import deny, guard
from web.runner import Runner

router = APIRouter()
log = logging.getLogger(__name__)


@router.websocket("/api/sessions/{session_id}/vnc")
async def vnc(websocket: WebSocket, session_id: str) -> None:
    checked = await guard(websocket, session_id)
    if checked is None:
        return
    _, row = checked
    runner: Runner = websocket.app.state.runner
    live = runner.live.get(session_id)
    client = live.client if live is not None else None
    if live is None or client is None or live.handle is None or not live.handle.vnc_available:
        await deny(websocket, 409, f"no live desktop: the session is {row.status}")
        return
    view_only = not (row.control == "user" and live.hold == "takeover")
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol="binary" if "binary" in offered else None)
    kicked = asyncio.Event()
    if not view_only:
        live.vnc_kicks.add(kicked)
    try:
        async with client.vnc_connect(view_only=view_only) as upstream:
            tasks = [asyncio.create_task(_up(websocket, upstream)), asyncio.create_task(_down(websocket, upstream)),
                     asyncio.create_task(kicked.wait())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
    except Exception as exc:  # the desktop went away or refused: end this viewer only
        log.info("vnc proxy ended: %r", exc)
    finally:
        live.vnc_kicks.discard(kicked)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(code=1000, reason="control handed back" if kicked.is_set() else ""),
                                   2)


async def _up(websocket: WebSocket, upstream: ClientConnection) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None and message.get("text") is not None:
                data = message["text"].encode("latin-1", "replace")
            if data:
                await upstream.send(data)


async def _down(websocket: WebSocket, upstream: ClientConnection) -> None:
    async for data in upstream:
        await websocket.send_bytes(data if isinstance(data, bytes) else data.encode())
