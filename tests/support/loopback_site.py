"""A small web site on 127.0.0.1 for tests and benchmarks: GET requests answered by a route function.

``route(path, query)`` returns ``(body, content_type)``, or ``None`` for a 404; it may sleep to play a slow
server (each request has its own thread). Replies are never cached by the browser (``no-store``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = Callable[[str, str], tuple[bytes, str] | None]


class LoopbackSite:
    def __init__(self, route: Route, name: str = "loopback-site") -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                answer = route(path, query)
                if answer is None:
                    self.send_error(404)
                    return
                body, ctype = answer
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name=name, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
