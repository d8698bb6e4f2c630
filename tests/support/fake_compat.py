"""A scriptable fake of an OpenAI-compatible chat endpoint (``POST /v1/chat/completions``), as vLLM, SGLang or
Ollama serve it for open GUI models; the real ``openai`` SDK talks to it with ``base_url=fake.url + "/v1"``.

Script entries are the model's raw text (``say("Thought: …\\nAction: click(...)")``) or errors.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.scripted_http import ErrorReply, Request, ScriptedServer, error

__all__ = ["ErrorReply", "FakeCompat", "Request", "error"]
_ids = itertools.count(1)


@dataclass
class Say:
    text: str
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 900, "completion_tokens": 25,
                                                           "total_tokens": 925})


def say(text: str) -> Say:
    return Say(text)


class FakeCompat(ScriptedServer):
    name = "compat"

    def route(self, path: str) -> bool:
        return path == "/v1/chat/completions"

    def render(self, answer: Say, request: Request) -> dict[str, Any]:
        return {"id": f"chatcmpl-{next(_ids)}", "object": "chat.completion", "created": 1_765_000_000,
                "model": request.body.get("model", "local"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                             "finish_reason": "stop", "logprobs": None}],
                "usage": answer.usage}

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"object": "error", "message": message, "type": "BadRequestError" if status < 500 else "InternalError",
                "param": None, "code": status}


def last_user_texts(request: Request) -> list[str]:
    last = request.body["messages"][-1]
    return [p["text"] for p in last["content"] if p.get("type") == "text"]


@pytest.fixture
def fake_compat() -> Iterator[FakeCompat]:
    with FakeCompat() as fake:
        yield fake
