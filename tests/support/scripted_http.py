"""The scripted HTTP server under the fake model APIs (``fake_openai``, ``fake_gemini``, ``fake_compat``).

Same contract as ``fake_messages.FakeMessages``: tests ``script()`` answers in order (a ``JsonReply``, an
``ErrorReply`` or a callable computing one from the ``Request``), read ``requests`` back, and an exhausted
script answers 400 so a run never hangs. Each fake supplies ``route(path)`` (does it serve this path?) and
``render(answer, request)`` (its API's JSON for a scripted answer) and ``error_body``.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

_DATA_URL = re.compile(r"data:image/[a-z]+;base64,([A-Za-z0-9+/=]+)")


def b64(data: str) -> bytes:
    """Standard or url-safe base64 (google-genai sends bytes url-safe; the APIs accept both)."""
    return base64.urlsafe_b64decode(data.replace("+", "-").replace("/", "_"))


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float

    @property
    def images(self) -> list[bytes]:
        """Every image in the request body (data URLs and Gemini inline data), in order, decoded."""
        out: list[bytes] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                inline = node.get("inlineData") or node.get("inline_data")
                if isinstance(inline, dict) and "data" in inline:
                    out.append(b64(inline["data"]))
                    return
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)
            elif isinstance(node, str) and node.startswith("data:image/"):
                match = _DATA_URL.match(node)
                if match:
                    out.append(base64.b64decode(match.group(1)))

        walk(self.body)
        return out


@dataclass
class ErrorReply:
    status: int
    message: str = "fake error"
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, message: str = "", *, headers: dict[str, str] | None = None) -> ErrorReply:
    return ErrorReply(status, message or f"fake error {status}", dict(headers or {}))


Entry = Any  # a fake's reply type, an ErrorReply, or Callable[[Request], either]


class LocalServer:
    """The plumbing every fake model API shares: a threaded HTTP server on loopback, the script of answers
    taken in order, the requests seen, and what a responder raised. A fake supplies ``_handler_class`` (its
    wire format) and ``_error`` (its API's error answer)."""

    name = "scripted"

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.errors: list[Exception] = []  # exceptions raised by responders
        self._script: list[Entry] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        # serve_forever's poll interval is how long close() waits (0.5 s by default, in every test).
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name=f"fake-{self.name}",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, *entries: Entry) -> None:
        with self._lock:
            self._script.extend(entries)

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next(self, request: Any) -> Any:
        """The next scripted answer (a responder called with the request), or a 400 once the script is out."""
        with self._lock:
            self.requests.append(request)
            entry = self._script.pop(0) if self._script else None
        if entry is None:
            return self._error(400, f"fake_{self.name}: script exhausted")
        if not callable(entry):
            return entry
        try:
            return entry(request)
        except Exception as exc:  # a broken responder fails the run plainly (400 is never retried)
            self.errors.append(exc)
            return self._error(400, f"fake_{self.name}: responder raised {type(exc).__name__}: {exc}")

    def _error(self, status: int, message: str) -> Any:
        raise NotImplementedError

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError


class ScriptedServer(LocalServer):
    """A fake answering JSON on the routes it serves (``fake_openai``, ``fake_gemini``, ``fake_compat``)."""

    # ---- what each fake supplies -----------------------------------------------------------------
    def route(self, path: str) -> bool:
        raise NotImplementedError

    def render(self, answer: Any, request: Request) -> dict[str, Any]:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error": {"code": status, "message": message}}

    # ---- plumbing --------------------------------------------------------------------------------
    def _error(self, status: int, message: str) -> ErrorReply:
        return error(status, message)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are two writes: without this, Nagle holds the body until the client's delayed
            # ACK (~40 ms on loopback), which would be billed to the adapters in the benchmark.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                if not fake.route(self.path.split("?")[0]):
                    self._json(404, fake.error_body(404, f"no route {self.path}"))
                    return
                answer = fake._next(request)
                try:
                    if isinstance(answer, ErrorReply):
                        self._json(answer.status, fake.error_body(answer.status, answer.message), answer.headers)
                    else:
                        self._json(200, fake.render(answer, request))
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


Responder = Callable[[Request], Any]
