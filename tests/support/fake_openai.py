"""A scriptable fake of OpenAI's Responses API (``POST /v1/responses``), for the real ``openai`` SDK.

Script entries are output-item lists built with the helpers below (the wire format of
https://platform.openai.com/docs/api-reference/responses), or errors::

    with FakeOpenAI() as fake:
        fake.script(respond(reasoning("look first"), computer_call(click(10, 20), keypress("ENTER"))),
                    error(429, headers={"retry-after": "1"}),
                    respond(message("done")))
        client = openai.AsyncOpenAI(base_url=fake.url + "/v1", api_key="k", max_retries=0)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.scripted_http import ErrorReply, Request, ScriptedServer, error

__all__ = ["ErrorReply", "FakeOpenAI", "Request", "error"]
_ids = itertools.count(1)


@dataclass
class Response:
    output: list[dict[str, Any]]
    usage: dict[str, Any] = field(default_factory=lambda: {
        "input_tokens": 1200, "output_tokens": 40, "total_tokens": 1240,
        "input_tokens_details": {"cached_tokens": 200}, "output_tokens_details": {"reasoning_tokens": 10}})
    status: str = "completed"


def respond(*items: dict[str, Any], **kw: Any) -> Response:
    return Response(list(items), **kw)


def reasoning(summary: str = "") -> dict[str, Any]:
    n = next(_ids)
    return {"type": "reasoning", "id": f"rs_{n}", "encrypted_content": f"enc-{n}",
            "summary": [{"type": "summary_text", "text": summary}] if summary else []}


def message(text: str) -> dict[str, Any]:
    return {"type": "message", "id": f"msg_{next(_ids)}", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def computer_call(*actions: dict[str, Any], batch: bool | None = None, call_id: str | None = None,
                  checks: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """One action goes in ``action`` unless ``batch``; several always go in ``actions``."""
    n = next(_ids)
    item: dict[str, Any] = {"type": "computer_call", "id": f"cu_{n}", "call_id": call_id or f"call_{n}",
                            "status": "completed", "pending_safety_checks": checks or []}
    if len(actions) == 1 and not batch:
        item["action"] = actions[0]
    else:
        item["actions"] = list(actions)
    return item


def check(code: str, message: str) -> dict[str, str]:
    return {"id": f"cu_sc_{next(_ids)}", "code": code, "message": message}


def click(x: int, y: int, button: str = "left", keys: list[str] | None = None) -> dict[str, Any]:
    return {"type": "click", "button": button, "x": x, "y": y, **({"keys": keys} if keys else {})}


def double_click(x: int, y: int) -> dict[str, Any]:
    return {"type": "double_click", "x": x, "y": y}


def drag(*path: tuple[int, int]) -> dict[str, Any]:
    return {"type": "drag", "path": [{"x": x, "y": y} for x, y in path]}


def keypress(*keys: str) -> dict[str, Any]:
    return {"type": "keypress", "keys": list(keys)}


def move(x: int, y: int) -> dict[str, Any]:
    return {"type": "move", "x": x, "y": y}


def scroll(x: int, y: int, scroll_x: int = 0, scroll_y: int = 0) -> dict[str, Any]:
    return {"type": "scroll", "x": x, "y": y, "scroll_x": scroll_x, "scroll_y": scroll_y}


def type_text(text: str) -> dict[str, Any]:
    return {"type": "type", "text": text}


def wait() -> dict[str, Any]:
    return {"type": "wait"}


def screenshot() -> dict[str, Any]:
    return {"type": "screenshot"}


_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_exceeded",
                500: "server_error", 503: "server_error"}


class FakeOpenAI(ScriptedServer):
    name = "openai"

    def route(self, path: str) -> bool:
        return path == "/v1/responses"

    def render(self, answer: Response, request: Request) -> dict[str, Any]:
        return {"id": f"resp_{next(_ids)}", "object": "response", "created_at": 1_765_000_000,
                "status": answer.status, "model": request.body.get("model", "computer-use-preview"),
                "output": answer.output, "usage": answer.usage, "parallel_tool_calls": True, "tools": [],
                "tool_choice": "auto", "error": None, "incomplete_details": None, "instructions": None,
                "metadata": {}, "temperature": 1.0, "top_p": 1.0}

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error": {"message": message, "type": _ERROR_TYPES.get(status, "server_error"), "param": None,
                          "code": None}}


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake
