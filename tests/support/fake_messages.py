"""A scriptable fake of Anthropic's Messages API (``POST /v1/messages``) on 127.0.0.1.

The real ``anthropic`` SDK talks to it over HTTP; nothing is monkeypatched. Each test scripts the
responses, in order, and reads back every request body the server received::

    with FakeMessages() as fake:                       # or use the ``fake_messages`` fixture
        fake.script(
            error(429, headers={"retry-after": "2"}),   # a status error, with headers
            reply(thinking("hmm"), tool_use("computer", {"action": "screenshot"})),
            lambda req: reply(text(f"saw {len(req.images)} images")),  # computed from the request
            reply(text("done"), overload_mid_stream=True),  # 200 + SSE ``error`` event mid-stream
            reply(text("slow"), delay_s=5),             # answer after 5 s (client timeouts)
        )
        client = AsyncAnthropic(base_url=fake.url, api_key="test-key", max_retries=0)
        ...
        fake.requests[1].body["messages"]              # what the SDK sent, parsed

A request with ``"stream": true`` is answered with SSE (``message_start``, ``content_block_*`` with
text/thinking/signature/input_json deltas, ``message_delta``, ``message_stop``, and ``ping``s), any
other with the JSON message. When the script runs out, the server answers 400
``invalid_request_error`` "fake_messages: script exhausted" — a run never hangs on a missing entry.
A responder that raises gets a 400 naming the exception (and it is kept in ``fake.errors``).
``api_key`` checks are opt-in: ``FakeMessages(api_key="k")`` answers 401 to any other key
(``x-api-key`` or ``Authorization: Bearer``).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from PIL import Image, ImageChops

from tests.support.scripted_http import LocalServer

_ids = itertools.count(1)


# ---- script entries -----------------------------------------------------------------------------
def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def thinking(value: str, signature: str | None = None) -> dict[str, Any]:
    return {"type": "thinking", "thinking": value, "signature": signature or f"sig-{next(_ids)}-{len(value)}"}


def redacted_thinking(data: str = "opaque") -> dict[str, Any]:
    return {"type": "redacted_thinking", "data": data}


def tool_use(name: str, input: Any, *, id: str | None = None, raw_input: str | None = None) -> dict[str, Any]:
    """A tool call. ``raw_input`` streams that exact (possibly invalid) JSON text instead of ``input``."""
    block = {"type": "tool_use", "id": id or f"toolu_{next(_ids):04d}", "name": name, "input": input}
    if raw_input is not None:
        block["_raw"] = raw_input
    return block


@dataclass
class Reply:
    content: list[dict[str, Any]]
    stop_reason: str | None = None  # default: tool_use if any tool_use block, else end_turn
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 1000, "output_tokens": 50})
    delay_s: float = 0.0
    overload_mid_stream: bool = False  # 200 + event: error (overloaded_error) after the first block starts
    cut_off: bool = False  # stream closes without message_stop
    model: str | None = None


@dataclass
class ErrorReply:
    status: int
    type: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def reply(*blocks: dict[str, Any], **kw: Any) -> Reply:
    return Reply(list(blocks), **kw)


_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                529: "overloaded_error"}


def error(status: int, type: str = "", message: str = "", *, headers: dict[str, str] | None = None,
          delay_s: float = 0.0) -> ErrorReply:
    return ErrorReply(status, type or _ERROR_TYPES.get(status, "api_error"), message or f"fake error {status}",
                      dict(headers or {}), delay_s)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    raw: bytes
    body: dict[str, Any]
    at: float

    @property
    def api_key(self) -> str | None:
        """The key the client sent: ``x-api-key`` or ``Authorization: Bearer`` (newer SDKs send the latter)."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None

    @property
    def images(self) -> list[bytes]:
        """Every base64 image in the messages, oldest first, decoded."""
        out: list[bytes] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if node.get("type") == "image" and isinstance(node.get("source"), dict):
                    out.append(base64.b64decode(node["source"]["data"]))
                    return
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(self.body.get("messages", []))
        return out


Entry = Reply | ErrorReply | Callable[[Request], "Reply | ErrorReply"]


# ---- the server ---------------------------------------------------------------------------------
class FakeMessages(LocalServer):
    name = "messages"

    def __init__(self, *, api_key: str | None = None, model: str = "claude-opus-4-5") -> None:
        self.requests: list[Request]  # this API's requests (LocalServer keeps them)
        self._closing = threading.Event()
        self.api_key, self.model = api_key, model
        super().__init__()

    def close(self) -> None:
        self._closing.set()
        super().close()

    def _error(self, status: int, message: str) -> ErrorReply:
        return error(status, message=message)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                request = Request(self.path, headers, raw, body, time.time())
                if not self.path.startswith("/v1/messages"):
                    self._json(404, _err("not_found_error", f"no route {self.path}"))
                    return
                if fake.api_key is not None and request.api_key != fake.api_key:
                    with fake._lock:
                        fake.requests.append(request)
                    self._json(401, _err("authentication_error", "invalid x-api-key"))
                    return
                answer = fake._next(request)
                if answer.delay_s and fake._closing.wait(answer.delay_s):
                    return
                try:
                    if isinstance(answer, ErrorReply):
                        self._json(answer.status, _err(answer.type, answer.message), answer.headers)
                    elif body.get("stream"):
                        self._sse(answer, body)
                    else:
                        self._json(200, _message(answer, body, fake.model))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test): nothing to answer

            def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", f"req_fake_{next(_ids)}")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _sse(self, answer: Reply, body: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True
                for chunk in _sse_events(answer, body, fake.model):
                    self.wfile.write(chunk)
                    self.wfile.flush()

        return Handler


def _err(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _public(block: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if not k.startswith("_")}


def _stop_reason(answer: Reply) -> str:
    if answer.stop_reason:
        return answer.stop_reason
    return "tool_use" if any(b["type"] == "tool_use" for b in answer.content) else "end_turn"


def _message(answer: Reply, body: dict[str, Any], model: str) -> dict[str, Any]:
    return {"id": f"msg_fake_{next(_ids)}", "type": "message", "role": "assistant",
            "model": answer.model or body.get("model") or model,
            "content": [_public(b) for b in answer.content], "stop_reason": _stop_reason(answer),
            "stop_sequence": None, "usage": answer.usage}


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


def _pieces(value: str, size: int = 16) -> Iterator[str]:
    for i in range(0, max(len(value), 1), size):
        yield value[i:i + size]


def _sse_events(answer: Reply, body: dict[str, Any], model: str) -> Iterator[bytes]:
    start = _message(answer, body, model)
    start.update(content=[], stop_reason=None)
    start["usage"] = {**answer.usage, "output_tokens": 1}
    yield _event("message_start", {"type": "message_start", "message": start})
    yield _event("ping", {"type": "ping"})
    for index, block in enumerate(answer.content):
        kind = block["type"]
        empty = {"text": {"type": "text", "text": ""},
                 "thinking": {"type": "thinking", "thinking": "", "signature": ""},
                 "tool_use": {"type": "tool_use", "id": block.get("id"), "name": block.get("name"), "input": {}},
                 }.get(kind, _public(block))
        yield _event("content_block_start", {"type": "content_block_start", "index": index, "content_block": empty})
        if answer.overload_mid_stream:
            yield _event("error", _err("overloaded_error", "Overloaded"))
            return
        deltas: list[dict[str, Any]] = []
        if kind == "text":
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
        elif kind == "thinking":
            deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif kind == "tool_use":
            raw = block.get("_raw", json.dumps(block["input"]))
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _pieces(raw)]
        for delta in deltas:
            yield _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        yield _event("content_block_stop", {"type": "content_block_stop", "index": index})
    if answer.cut_off:
        return
    yield _event("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": _stop_reason(answer), "stop_sequence": None},
                                   "usage": {"output_tokens": answer.usage.get("output_tokens", 0)}})
    yield _event("message_stop", {"type": "message_stop"})


# ---- image helpers for responders ---------------------------------------------------------------
def without_cache_control(node: Any) -> Any:
    """A request (or part of one) without its ``cache_control`` markers: the API matches cached prefixes on
    content, so prefixes are compared without them."""
    if isinstance(node, dict):
        return {k: without_cache_control(v) for k, v in node.items() if k != "cache_control"}
    if isinstance(node, list):
        return [without_cache_control(v) for v in node]
    return node


def find_color(png: bytes, rgb: tuple[int, int, int], tolerance: int = 8) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)``, inclusive, of the pixels within ``tolerance`` of ``rgb``; None if absent."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    bands = zip(image.split(), rgb, strict=True)
    masks = [band.point(lambda v, c=c: 255 if abs(v - c) <= tolerance else 0) for band, c in bands]
    box = ImageChops.multiply(ImageChops.multiply(masks[0], masks[1]), masks[2]).getbbox()
    return None if box is None else (box[0], box[1], box[2] - 1, box[3] - 1)


def centre(box: tuple[int, int, int, int]) -> tuple[int, int]:
    return (box[0] + box[2]) // 2, (box[1] + box[3]) // 2


@pytest.fixture
def fake_messages() -> Iterator[FakeMessages]:
    """A fresh fake Messages API per test; it is shut down (threads joined) afterwards."""
    with FakeMessages() as fake:
        yield fake
