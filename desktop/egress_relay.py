"""Inside a desktop without a network (the docker backend): a loopback port that relays every connection to
the egress proxy's unix socket, so the browser and the shell have a ``host:port`` proxy to point at while the
container itself has no route anywhere. The relay decides nothing: the proxy at the other end does.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from deskpilot.errors import DesktopStartError
from desktop.egress_proxy import splice


class EgressRelay:
    """``127.0.0.1:<port>`` → ``uds``, on an event loop of its own thread (the daemon's loop is uvicorn's)."""

    def __init__(self, uds: str) -> None:
        self.uds = uds
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="egress-relay", daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EgressRelay:
        self._thread.start()
        try:
            self._server = asyncio.run_coroutine_threadsafe(
                asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result(30)
        except OSError as exc:
            self.stop()
            raise DesktopStartError(f"cannot open the egress relay: {exc}") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.uds)
        except OSError:  # no proxy: nothing goes out (fail closed)
            writer.close()
            return
        try:
            await splice(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()
            writer.close()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()
