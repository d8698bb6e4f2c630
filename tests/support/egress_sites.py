"""Test web sites under several host names for egress tests: a tiny HTTP + WebSocket server per loopback
address (``allowed.test`` on 127.0.0.2, ``blocked.test`` on 127.0.0.3, ...), each recording what reached it.

The names exist only in the egress proxy's ``hosts`` map (the ``egress_hosts`` setting), so a request that
does not go through the proxy cannot even find them by name.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Page = Callable[["Site", str], tuple[str, dict[str, str], str]]  # (status, headers, body) for a path


@dataclass
class Site:
    name: str
    address: str
    pages: dict[str, Page] = field(default_factory=dict)
    port: int = 0
    hits: list[str] = field(default_factory=list)  # "GET /path" of every request that reached this site
    host_headers: list[str] = field(default_factory=list)  # the Host header of each
    server: asyncio.Server | None = None

    @property
    def origin(self) -> str:
        return f"http://{self.name}:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            method, path, _ = head.split("\r\n", 1)[0].split(" ", 2)
            self.hits.append(f"{method} {path}")
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in head.split("\r\n")[1:] if line)}
            self.host_headers.append(headers.get("host", ""))
            if headers.get("upgrade", "").lower() == "websocket":
                await self._websocket(headers, reader, writer)
                return
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(length)
            page = self.pages.get(path.split("?", 1)[0])
            status, extra, body = page(self, path) if page else ("200 OK", {}, f"{self.name} {path}")
            data = body.encode()
            lines = [f"HTTP/1.1 {status}", "Content-Type: text/html; charset=utf-8", f"Content-Length: {len(data)}",
                     "Connection: close", "Access-Control-Allow-Origin: *", *(f"{k}: {v}" for k, v in extra.items())]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
            await writer.drain()
        writer.close()

    async def _websocket(self, headers: dict[str, str], reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        """Accept, send one text frame ``hello from <name>``, close."""
        accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + _WS_GUID).encode()).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        payload = f"hello from {self.name}".encode()
        writer.write(bytes([0x81, len(payload)]) + payload)
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(1024), 10)
        writer.close()


@contextlib.asynccontextmanager
async def serve_sites(*sites: Site) -> AsyncIterator[dict[str, Site]]:
    try:
        for site in sites:
            site.server = await asyncio.start_server(site._handle, site.address, 0)
            site.port = site.server.sockets[0].getsockname()[1]
        yield {site.name: site for site in sites}
    finally:
        for site in sites:
            if site.server is not None:
                site.server.close()
                await site.server.wait_closed()


def hosts_map(*sites: Site) -> dict[str, str]:
    """The ``egress_hosts`` setting for these sites."""
    return {site.name: site.address for site in sites}


@contextlib.contextmanager
def sites_in_thread(*sites: Site) -> Iterator[dict[str, Site]]:
    """``serve_sites`` on an event loop of its own thread (for tests whose own code is synchronous)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="egress-sites", daemon=True)
    thread.start()
    ctx = serve_sites(*sites)
    try:
        yield asyncio.run_coroutine_threadsafe(ctx.__aenter__(), loop).result(30)
    finally:
        asyncio.run_coroutine_threadsafe(ctx.__aexit__(None, None, None), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
