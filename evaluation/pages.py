"""The suite's local pages, served by the harness on loopback (no internet): ``{pages}`` in a task.

Static files from the suite's ``pages/`` directory, never outside it; ``?download=1`` serves a file as an
attachment (for download tasks); every reply is ``no-store`` so a page is never stale between tasks.
"""

from __future__ import annotations

import mimetypes
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class PageServer:
    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.root = root.resolve()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="eval-pages", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> PageServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> PageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        root = self.root

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                rel = unquote(parts.path).lstrip("/") or "index.html"
                path = (root / rel).resolve()
                if path.is_dir():
                    path = path / "index.html"
                if not path.is_relative_to(root) or not path.is_file():
                    self._send(404, b"not found", "text/plain")
                    return
                kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                headers = {}
                if parse_qs(parts.query).get("download") == ["1"]:
                    headers["Content-Disposition"] = f'attachment; filename="{path.name}"'
                self._send(200, path.read_bytes(), kind + ("; charset=utf-8" if kind.startswith("text/") else ""),
                           headers)

            def _send(self, status: int, body: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

        return Handler
