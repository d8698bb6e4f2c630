"""The VNC bridge: the RFB filter on its own, then RFB through a real daemon's WebSocket to a real x11vnc."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection
from Xlib import display as xdisplay

from deskpilot.settings import Settings
from desktop.local import LocalDesktop, start_local_desktop
from desktop.vnc_bridge import (
    CLIENT_CUT_TEXT,
    KEY_EVENT,
    POINTER_EVENT,
    SET_DESKTOP_SIZE,
    RfbClientFilter,
    RfbProtocolError,
)

HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x00"  # version, security None, ClientInit shared=0
SET_PIXEL_FORMAT = b"\x00" + b"\x00" * 3 + bytes(16)
SET_ENCODINGS = struct.pack(">BxHiii", 2, 3, 0, 1, -223)
FB_REQUEST = struct.pack(">BBHHHH", 3, 0, 0, 0, 640, 480)
KEY = struct.pack(">BBxxI", 4, 1, 0xFF0D)
POINTER = struct.pack(">BBHH", 5, 1, 100, 50)
CUT = struct.pack(">BxxxI", 6, 5) + b"hello"
EXT_CUT = struct.pack(">Bxxxi", 6, -4) + b"\x00\x00\x00\x01"
FENCE = struct.pack(">BxxxIB", 248, 0, 3) + b"abc"
CONTINUOUS = struct.pack(">BBHHHH", 150, 1, 0, 0, 640, 480)
DESKTOP_SIZE = struct.pack(">BxHHBx", 251, 800, 600, 1) + bytes(16)


def feed_in_pieces(rfb: RfbClientFilter, stream: bytes, size: int) -> bytes:
    return b"".join(rfb.feed(stream[i:i + size]) for i in range(0, len(stream), size))


@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
def test_view_only_filter_drops_input_and_keeps_message_boundaries(piece: int) -> None:
    kept = SET_PIXEL_FORMAT + SET_ENCODINGS + FB_REQUEST + FENCE + CONTINUOUS
    stream = (HANDSHAKE + SET_PIXEL_FORMAT + KEY + SET_ENCODINGS + POINTER + FB_REQUEST + CUT + EXT_CUT
              + FENCE + DESKTOP_SIZE + CONTINUOUS + POINTER)
    rfb = RfbClientFilter(view_only=True)
    out = feed_in_pieces(rfb, stream, piece)
    assert out == b"RFB 003.008\n\x01\x01" + kept  # ClientInit forced to shared
    assert rfb.dropped == {KEY_EVENT: 1, POINTER_EVENT: 2, CLIENT_CUT_TEXT: 2, SET_DESKTOP_SIZE: 1}


def test_full_control_forwards_everything_untouched() -> None:
    stream = HANDSHAKE + KEY + POINTER + CUT
    rfb = RfbClientFilter(view_only=False)
    assert feed_in_pieces(rfb, stream, 5) == stream


def test_rfb_33_and_vnc_auth_handshakes() -> None:
    rfb = RfbClientFilter(view_only=True)
    assert rfb.feed(b"RFB 003.003\n" + b"\x00" + POINTER + FB_REQUEST) == b"RFB 003.003\n\x01" + FB_REQUEST
    rfb = RfbClientFilter(view_only=True)
    response = bytes(range(16))
    out = rfb.feed(b"RFB 003.008\n" + b"\x02" + response + b"\x01" + KEY)
    assert out == b"RFB 003.008\n\x02" + response + b"\x01"


@pytest.mark.parametrize("stream", [
    HANDSHAKE + b"\x07" + bytes(20),         # a message type we cannot size
    b"RFB 003.008\n" + b"\x10",              # a security type we cannot follow
    b"HTTP/1.1 200\r\n\r\n",                 # not RFB at all
    HANDSHAKE + b"\xff\x01" + bytes(10),     # a QEMU subtype other than key events
])
def test_view_only_filter_refuses_what_it_cannot_parse(stream: bytes) -> None:
    with pytest.raises(RfbProtocolError):
        RfbClientFilter(view_only=True).feed(stream)


# --- through a real daemon -----------------------------------------------------------------------------


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[LocalDesktop]:
    async with start_local_desktop(640, 480, data_dir=tmp_path, browser=False, settings=Settings()) as desktop:
        yield desktop


async def recv_exactly(ws: ClientConnection, buffer: bytearray, n: int) -> bytes:
    while len(buffer) < n:
        message = await ws.recv()
        assert isinstance(message, bytes), "RFB must arrive in binary frames"
        buffer += message
    data = bytes(buffer[:n])
    del buffer[:n]
    return data


async def handshake(ws: ClientConnection, buffer: bytearray) -> tuple[int, int]:
    """RFB 3.8 with security None; returns the framebuffer size from ServerInit."""
    assert await recv_exactly(ws, buffer, 12) == b"RFB 003.008\n"
    await ws.send(b"RFB 003.008\n")
    count = (await recv_exactly(ws, buffer, 1))[0]
    assert 1 in await recv_exactly(ws, buffer, count)
    await ws.send(b"\x01")
    assert await recv_exactly(ws, buffer, 4) == b"\x00\x00\x00\x00"  # SecurityResult OK
    await ws.send(b"\x01")  # ClientInit: shared
    width, height = struct.unpack(">HH", await recv_exactly(ws, buffer, 4))
    await recv_exactly(ws, buffer, 16)  # pixel format
    (name_length,) = struct.unpack(">I", await recv_exactly(ws, buffer, 4))
    await recv_exactly(ws, buffer, name_length)
    return width, height


async def point_and_sync(ws: ClientConnection, buffer: bytearray, x: int, y: int) -> None:
    """Send a PointerEvent, then a 1×1 update request; RFB servers handle client messages in order, so
    once the update arrives the pointer event has been handled (or was never delivered)."""
    await ws.send(struct.pack(">BBHH", POINTER_EVENT, 0, x, y))
    await ws.send(struct.pack(">BBHHHH", 3, 0, 0, 0, 1, 1))
    assert (await recv_exactly(ws, buffer, 1))[0] == 0  # FramebufferUpdate


def pointer_position(display: str) -> tuple[int, int]:
    disp = xdisplay.Display(display)
    try:
        reply = disp.screen().root.query_pointer()
        return int(reply.root_x), int(reply.root_y)
    finally:
        disp.close()


@pytest.mark.desktop
async def test_view_only_drops_pointer_and_full_control_moves_it(desk: LocalDesktop,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XAUTHORITY", str(desk.xauthority))  # XQueryPointer from outside needs the cookie
    start = pointer_position(desk.display)
    assert start != (100, 50)
    async with asyncio.timeout(30):
        async with desk.client.vnc_connect(view_only=True) as ws:
            buffer = bytearray()
            assert await handshake(ws, buffer) == (640, 480)
            await point_and_sync(ws, buffer, 100, 50)
        assert pointer_position(desk.display) == start  # XQueryPointer: it did not move

        async with desk.client.vnc_connect(view_only=False) as ws:
            buffer = bytearray()
            await handshake(ws, buffer)
            await point_and_sync(ws, buffer, 100, 50)
            while pointer_position(desk.display) != (100, 50):
                await asyncio.sleep(0.02)


def test_a_huge_clipboard_message_is_discarded_as_it_streams_not_buffered() -> None:
    rfb = RfbClientFilter(view_only=True)
    assert rfb.feed(HANDSHAKE) == b"RFB 003.008\n\x01\x01"
    text_length = 64 * 65536 + 3
    assert rfb.feed(struct.pack(">BxxxI", CLIENT_CUT_TEXT, text_length)) == b""
    chunk = b"x" * 65536
    for _ in range(64):  # 4 MiB of clipboard text: nothing forwarded, nothing kept
        assert rfb.feed(chunk) == b""
        assert rfb.buffered == 0
    assert rfb.feed(b"end" + FB_REQUEST) == FB_REQUEST  # the text's last bytes, then a normal message
    assert rfb.dropped == {CLIENT_CUT_TEXT: 1}
