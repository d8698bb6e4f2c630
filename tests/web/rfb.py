"""A minimal RFB (VNC) client over the service's WebSocket, enough to log in, move the pointer and press keys."""

from __future__ import annotations

import struct
from typing import Any

from websockets.sync.client import connect


class RfbClient:
    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.ws: Any = connect(url, additional_headers=headers, open_timeout=15, max_size=None, legacy=True)
        self._buf = b""
        self.width = self.height = 0
        self.version = b""  # the server's ProtocolVersion message

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            data = self.ws.recv(timeout=15)
            self._buf += data if isinstance(data, bytes) else data.encode()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def handshake(self) -> RfbClient:
        version = self.version = self._read(12)
        assert version.startswith(b"RFB 003."), version
        self.ws.send(b"RFB 003.008\n")
        count = self._read(1)[0]
        types = self._read(count)
        assert 1 in types, f"no 'None' security offered: {types!r}"  # the proxy's token is the auth
        self.ws.send(bytes([1]))
        assert struct.unpack(">I", self._read(4))[0] == 0
        self.ws.send(bytes([1]))  # ClientInit: shared, so viewers don't kick each other
        self.width, self.height = struct.unpack(">HH", self._read(4))
        self._read(16)
        self._read(struct.unpack(">I", self._read(4))[0])
        return self

    def pointer(self, x: int, y: int, buttons: int = 0) -> None:
        self.ws.send(struct.pack(">BBHH", 5, buttons, x, y))

    def key(self, keysym: int, down: bool) -> None:
        self.ws.send(struct.pack(">BBxxI", 4, int(down), keysym))

    def close(self) -> None:
        self.ws.close()
