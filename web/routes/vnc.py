"""WS /api/sessions/{id}/vnc: the RFB protocol for noVNC, through the desktop daemon's bridge.

Input is allowed only on a connection opened while the session's owner holds control (after takeover);
every other connection is opened with the daemon's ``view_only=1``, so the bridge drops key and pointer
messages on the server. Handback closes the input-capable connections; the UI reconnects view-only.

On a replica that does not run the session, the desktop is reached through the endpoint its holder recorded
(``web/remote.py``); input is allowed while the session's row says the user holds control, and the connection
is closed once that takeover ends (the holder's handback reaches this replica through the event fan-out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection

from desktop.client import DesktopClient
from web.routes.wsguard import deny, guard
from web.runner import Runner
from web.store import SessionRow

router = APIRouter()
log = logging.getLogger(__name__)


@router.websocket("/api/sessions/{session_id}/vnc")
async def vnc(websocket: WebSocket, session_id: str) -> None:
    checked = await guard(websocket, session_id)
    if checked is None:
        return
    _, row = checked
    runner: Runner = websocket.app.state.runner
    desktop = await (_here(runner, row) if session_id in runner.live else _elsewhere(runner, row))
    if desktop is None:
        await deny(websocket, 409, f"no live desktop: the session is {row.status}")
        return
    kicked = desktop.kick or asyncio.Event()
    try:  # before accepting, so that a desktop this replica cannot reach is an error the client sees as such
        upstream = await desktop.client.vnc_connect(view_only=desktop.kick is None)
    except Exception as exc:
        desktop.forget()
        log.info("vnc bridge of session %s unreachable: %r", session_id, exc)
        await deny(websocket, 503, "the session's desktop cannot be reached from this replica")
        return
    offered = websocket.scope.get("subprotocols") or []
    try:
        await websocket.accept(subprotocol="binary" if "binary" in offered else None)
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
        desktop.forget()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(upstream.close(), 2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(code=1000, reason="control handed back" if kicked.is_set() else ""),
                                   2)


@dataclass
class _Desktop:
    client: DesktopClient
    kick: asyncio.Event | None = None  # set when the takeover an input connection was opened in ends; None: view-only
    forget: Callable[[], None] = lambda: None  # unregisters the kick


async def _here(runner: Runner, row: SessionRow) -> _Desktop | None:
    live = runner.live.get(row.id)
    if live is None or live.client is None or live.handle is None or not live.handle.vnc_available:
        return None
    if not (row.control == "user" and live.hold == "takeover"):
        return _Desktop(live.client)
    kick = asyncio.Event()
    live.vnc_kicks.add(kick)
    return _Desktop(live.client, kick, lambda: live.vnc_kicks.discard(kick))


async def _elsewhere(runner: Runner, row: SessionRow) -> _Desktop | None:
    """Another replica runs the session: its desktop through the endpoint it recorded."""
    cluster = runner.cluster
    if cluster is None:
        return None
    client = await cluster.remote.client(row.id, fresh=True)
    if client is None or not cluster.remote.vnc_available(row.id):
        return None
    if row.control != "user":
        return _Desktop(client)
    kick = cluster.remote.open_input(row.id, row.taken_over_at)
    await cluster.remote.check(row.id)  # registered, then checked: a handback in between is not missed
    if kick.is_set():
        cluster.remote.close_input(row.id, kick)
        return _Desktop(client)
    return _Desktop(client, kick, lambda: cluster.remote.close_input(row.id, kick))


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
