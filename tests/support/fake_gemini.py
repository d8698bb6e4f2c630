"""A scriptable fake of the Gemini API's ``generateContent`` for the real ``google-genai`` SDK.

The SDK is pointed here with ``http_options=HttpOptions(base_url=fake.url)``; it then posts to
``/v1beta/models/<model>:generateContent`` (camelCase JSON, as in https://ai.google.dev/api/generate-content).
Script entries are part lists built with the helpers below, or errors (Google's error JSON)::

    fake.script(candidate(call("click_at", x=500, y=500)), error(429), candidate(text("done")))
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.scripted_http import ErrorReply, Request, ScriptedServer, b64, error

__all__ = ["ErrorReply", "FakeGemini", "Request", "error"]
_ids = itertools.count(1)
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


@dataclass
class Candidate:
    parts: list[dict[str, Any]]
    finish_reason: str = "STOP"
    usage: dict[str, int] = field(default_factory=lambda: {
        "promptTokenCount": 1500, "candidatesTokenCount": 30, "thoughtsTokenCount": 20,
        "cachedContentTokenCount": 500, "totalTokenCount": 1550})


def candidate(*parts: dict[str, Any], **kw: Any) -> Candidate:
    return Candidate(list(parts), **kw)


def text(value: str) -> dict[str, Any]:
    return {"text": value}


def thought(value: str) -> dict[str, Any]:
    return {"text": value, "thought": True}


def call(name: str, *, signature: bytes | None = None, confirm: str | None = None, **args: Any) -> dict[str, Any]:
    """A function call part; ``confirm`` adds ``safety_decision: require_confirmation`` with that explanation."""
    if confirm is not None:
        args["safety_decision"] = {"decision": "require_confirmation", "explanation": confirm}
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    if signature is not None:
        part["thoughtSignature"] = base64.b64encode(signature).decode()
    return part


class FakeGemini(ScriptedServer):
    name = "gemini"

    def route(self, path: str) -> bool:
        return path.startswith("/v1beta/models/") and path.endswith(":generateContent")

    def render(self, answer: Candidate, request: Request) -> dict[str, Any]:
        model = request.path.split("/models/")[1].split(":")[0]
        return {"candidates": [{"content": {"role": "model", "parts": answer.parts},
                                "finishReason": answer.finish_reason, "index": 0}],
                "usageMetadata": answer.usage, "modelVersion": model, "responseId": f"resp-{next(_ids)}"}

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}}


def function_responses(request: Request) -> list[dict[str, Any]]:
    """The functionResponse parts of the newest user turn."""
    last = request.body["contents"][-1]
    return [p["functionResponse"] for p in last["parts"] if "functionResponse" in p]


def response_image(response: dict[str, Any]) -> bytes | None:
    """The screenshot of a functionResponse (the API takes ``inlineData`` or, as the SDK sends it, ``inline_data``)."""
    for part in response.get("parts") or []:
        blob = part.get("inlineData") or part.get("inline_data")
        if blob:
            return b64(blob["data"])
    return None


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    with FakeGemini() as fake:
        yield fake
