"""A byte relay from a listening address to a target address, each ``tcp:HOST:PORT`` or ``unix:PATH``.

The container tests use two to let a service container on a test-made network reach the fake Messages
API in the test process without touching any host network: a relay container on that network listens
on TCP and forwards to a unix socket in a bind-mounted directory, where the test process forwards to the
fake on its loopback. Standard library only, so it runs under the service image's Python too::

    python relay.py tcp:0.0.0.0:8080 unix:/relay/fake.sock
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import sys
import threading
from typing import Any

_CHUNK = 65536


def _address(spec: str) -> tuple[socket.AddressFamily, Any]:
    kind, _, rest = spec.partition(":")
    if kind == "unix" and rest:
        return socket.AF_UNIX, rest
    host, _, port = rest.rpartition(":")
    if kind == "tcp" and host and port.isdigit():
        return socket.AF_INET, (host, int(port))
    raise ValueError(f"not an address: {spec!r} (tcp:HOST:PORT or unix:PATH)")


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy until ``src`` ends, then tell ``dst`` no more is coming (the other direction may go on)."""
    with contextlib.suppress(OSError):
        while data := src.recv(_CHUNK):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class Relay:
    """Listens on ``listen`` and joins every connection to a new connection to ``to``, until ``close()``."""

    def __init__(self, listen: str, to: str) -> None:
        family, address = _address(listen)
        self._target = _address(to)
        relay = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                relay._join(self.request)

        self._server: socketserver.BaseServer
        if family == socket.AF_UNIX:
            self._server = _UnixServer(address, Handler)
            os.chmod(address, 0o666)  # the relay container's user is not this one
        else:
            self._server = _TCPServer(address, Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="relay", daemon=True)

    def _join(self, client: socket.socket) -> None:
        family, address = self._target
        try:
            upstream = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            return
        with upstream:
            try:
                upstream.connect(address)
            except OSError:
                return  # the client sees its connection closed, as with a refused one
            back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
            back.start()
            _pump(client, upstream)
            back.join()

    @property
    def address(self) -> Any:
        return self._server.server_address

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def start(self) -> Relay:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    listen_spec, target_spec = sys.argv[1:3]
    print(f"relay: {listen_spec} -> {target_spec}", flush=True)
    Relay(listen_spec, target_spec).serve_forever()
