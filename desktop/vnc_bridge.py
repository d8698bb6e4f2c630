"""WebSocket ↔ x11vnc unix socket, RFB bytes as-is in binary frames both ways.

For a view-only viewer the bridge parses the client→server half of RFB 3.3/3.7/3.8 and drops the messages
that act on the desktop (key, pointer, clipboard, resize, xvp, QEMU key events). The server→client half is
never parsed: it is forwarded untouched. A client message we cannot size ends a view-only connection —
forwarding it blindly could smuggle input through.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.websockets import WebSocket, WebSocketDisconnect

log = logging.getLogger(__name__)

# RFB client message types.
SET_PIXEL_FORMAT, SET_ENCODINGS, FRAMEBUFFER_UPDATE_REQUEST = 0, 2, 3
KEY_EVENT, POINTER_EVENT, CLIENT_CUT_TEXT = 4, 5, 6
ENABLE_CONTINUOUS_UPDATES, CLIENT_FENCE, XVP, SET_DESKTOP_SIZE, QEMU = 150, 248, 250, 251, 255
_DROPPED = frozenset({KEY_EVENT, POINTER_EVENT, CLIENT_CUT_TEXT, XVP, SET_DESKTOP_SIZE, QEMU})
_FIXED_SIZES = {SET_PIXEL_FORMAT: 20, FRAMEBUFFER_UPDATE_REQUEST: 10, KEY_EVENT: 8, POINTER_EVENT: 6,
                ENABLE_CONTINUOUS_UPDATES: 10, XVP: 4}
_READ_CHUNK = 65536


class RfbProtocolError(Exception):
    """The client sent something the view-only filter cannot size."""


class RfbClientFilter:
    """Incremental parser of the client→server stream. ``feed(data)`` returns the bytes to forward.

    With ``view_only=False`` everything passes untouched (no parsing). ``dropped`` counts dropped messages
    by type. Buffering is bounded: the one unbounded message, ClientCutText (up to 2 GiB), is dropped in
    view-only mode, so its text is discarded as it streams in rather than collected.
    """

    def __init__(self, view_only: bool) -> None:
        self.view_only = view_only
        self.dropped: dict[int, int] = {}
        self._buf = bytearray()
        self._state = "version"  # version → security → (auth) → init → messages
        self._rfb_minor = 8
        self._skip = 0  # bytes of a dropped ClientCutText still to discard

    @property
    def buffered(self) -> int:
        """Bytes held back while waiting for the rest of a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> bytes:
        if not self.view_only:
            return data
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
        self._buf += data
        out = bytearray()
        while True:
            if self._state == "messages" and len(self._buf) >= 8 and self._buf[0] == CLIENT_CUT_TEXT:
                length = abs(struct.unpack_from(">i", self._buf, 4)[0])
                self.dropped[CLIENT_CUT_TEXT] = self.dropped.get(CLIENT_CUT_TEXT, 0) + 1
                n = min(length, len(self._buf) - 8)
                del self._buf[:8 + n]
                self._skip = length - n
                if self._skip:
                    return bytes(out)  # the buffer is empty: the rest of the text arrives later
                continue
            size = self._next_size()
            if size is None or len(self._buf) < size:
                return bytes(out)
            chunk = bytes(self._buf[:size])
            del self._buf[:size]
            out += self._accept(chunk)

    def _next_size(self) -> int | None:
        """Bytes of the next client unit, or None while more bytes are needed to know it."""
        buf = self._buf
        if self._state == "version":
            return 12
        if self._state == "security":
            return 1
        if self._state == "auth":
            return 16  # VNC authentication response
        if self._state == "init":
            return 1
        if not buf:
            return None
        kind = buf[0]
        if kind in _FIXED_SIZES:
            return _FIXED_SIZES[kind]
        if kind == SET_ENCODINGS:
            return None if len(buf) < 4 else 4 + 4 * struct.unpack_from(">H", buf, 2)[0]
        if kind == CLIENT_CUT_TEXT:
            # A negative length marks the extended-clipboard format; its payload is abs(length) bytes.
            return None if len(buf) < 8 else 8 + abs(struct.unpack_from(">i", buf, 4)[0])
        if kind == CLIENT_FENCE:
            return None if len(buf) < 9 else 9 + buf[8]
        if kind == SET_DESKTOP_SIZE:
            return None if len(buf) < 8 else 8 + 16 * buf[6]
        if kind == QEMU:
            if len(buf) < 2:
                return None
            if buf[1] == 0:  # extended key event
                return 12
            raise RfbProtocolError(f"unsupported QEMU client message subtype {buf[1]}")
        raise RfbProtocolError(f"unknown RFB client message type {kind}")

    def _accept(self, chunk: bytes) -> bytes:
        if self._state == "version":
            if not chunk.startswith(b"RFB 003.") or not chunk.endswith(b"\n"):
                raise RfbProtocolError("bad RFB protocol version")
            self._rfb_minor = int(chunk[8:11])
            # RFB 3.3: the server picks the security type; x11vnc without a password picks None.
            self._state = "init" if self._rfb_minor < 7 else "security"
            return chunk
        if self._state == "security":
            if chunk[0] == 1:
                self._state = "init"
            elif chunk[0] == 2:
                self._state = "auth"
            else:
                raise RfbProtocolError(f"unsupported RFB security type {chunk[0]}")
            return chunk
        if self._state == "auth":
            self._state = "init"
            return chunk
        if self._state == "init":
            self._state = "messages"
            return b"\x01"  # a viewer must share the desktop, never disconnect the others
        if chunk[0] in _DROPPED:
            self.dropped[chunk[0]] = self.dropped.get(chunk[0], 0) + 1
            return b""
        return chunk


async def bridge(websocket: WebSocket, socket_path: str | Path, *, view_only: bool,
                 on_filter: Callable[[RfbClientFilter], Awaitable[None]] | None = None) -> None:
    """Pump bytes between an accepted WebSocket and the VNC unix socket until either side closes."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
    except OSError as exc:
        log.warning("vnc bridge: cannot reach %s: %s", socket_path, exc)
        await websocket.close(code=1011, reason="vnc server unavailable")
        return
    rfb_filter = RfbClientFilter(view_only)
    if on_filter is not None:
        await on_filter(rfb_filter)
    close_code, close_reason = 1000, ""

    async def client_to_server() -> None:
        nonlocal close_code, close_reason
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                close_code, close_reason = 1003, "RFB travels in binary frames"
                return
            try:
                out = rfb_filter.feed(data)
            except RfbProtocolError as exc:
                close_code, close_reason = 1002, str(exc)
                return
            if out:
                writer.write(out)
                await writer.drain()

    async def server_to_client() -> None:
        while data := await reader.read(_READ_CHUNK):
            await websocket.send_bytes(data)

    tasks = [asyncio.create_task(client_to_server()), asyncio.create_task(server_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError, RuntimeError):
                await task
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        with contextlib.suppress(RuntimeError, OSError):
            await websocket.close(code=close_code, reason=close_reason)
