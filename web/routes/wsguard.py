"""The handshake check shared by every WebSocket: Origin, token, ownership — all before ``accept()``.

A foreign Origin is refused with close code 1008 (the server answers the handshake with 403); a missing
or bad token gets an HTTP 401 denial and someone else's session a 404, in the API's JSON error shape.
"""

from __future__ import annotations

from fastapi import WebSocket

from deskpilot.errors import ServiceError
from web.auth import Principal, authenticate, origin_allowed
from web.middleware import error_response
from web.store import SessionRow, Store


async def deny(websocket: WebSocket, status: int, message: str) -> None:
    body = error_response(status, message)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(body)
    else:
        await websocket.close(code=1008, reason=message[:120])


async def guard(websocket: WebSocket, session_id: str) -> tuple[Principal, SessionRow] | None:
    settings = websocket.app.state.settings
    if not origin_allowed(websocket, settings.allowed_origins):
        await websocket.close(code=1008, reason="origin not allowed")
        return None
    try:
        who = await authenticate(websocket)
        store: Store = websocket.app.state.store
        row = await store.get_session(session_id, who.owner)
    except ServiceError as exc:
        await deny(websocket, exc.status, exc.message)
        return None
    return who, row
