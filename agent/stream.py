"""One model call: the streamed (or plain JSON) response assembled into a message param we can store.

Blocks are rebuilt as request params (what goes back into the history): text, thinking with its
signature, redacted thinking, tool_use. A ``tool_use`` whose streamed input is not valid JSON gets
``input: {}`` in the history and is listed in ``Reply.malformed`` so the loop answers it with an error
instead of running it.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic

from agent.providers.base import Reply

__all__ = ["IncompleteResponse", "Reply", "call_json", "call_stream"]


class IncompleteResponse(Exception):
    """The stream ended before ``message_stop``: treated like a dropped connection (retried)."""


def _block_param(block: Any) -> dict[str, Any]:
    kind = getattr(block, "type", "")
    if kind == "text":
        return {"type": "text", "text": block.text}
    if kind == "thinking":
        return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block.data}
    if kind == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    dumped: dict[str, Any] = block.model_dump(mode="json", exclude_none=True)
    return dumped


def _check_inputs(content: list[dict[str, Any]], malformed: dict[str, str]) -> None:
    for block in content:
        if block["type"] == "tool_use" and not isinstance(block.get("input"), dict):
            malformed[block["id"]] = f"tool input must be a JSON object, got {type(block.get('input')).__name__}"
            block["input"] = {}


async def call_json(client: anthropic.AsyncAnthropic, params: dict[str, Any]) -> Reply:
    msg: Any = await client.beta.messages.create(**params)
    content = [_block_param(b) for b in msg.content]
    malformed: dict[str, str] = {}
    _check_inputs(content, malformed)
    return Reply(content, msg.stop_reason, msg.usage.model_dump(mode="json"), msg.model, malformed)


async def call_stream(client: anthropic.AsyncAnthropic, params: dict[str, Any]) -> Reply:
    stream: Any = await client.beta.messages.create(**params, stream=True)
    blocks: dict[int, dict[str, Any]] = {}
    bufs: dict[int, str] = {}
    usage: dict[str, Any] = {}
    stop_reason: str | None = None
    model = ""
    done = False
    malformed: dict[str, str] = {}
    async with stream:
        async for event in stream:
            kind = event.type
            if kind == "message_start":
                model = event.message.model
                usage.update(event.message.usage.model_dump(mode="json", exclude_none=True))
            elif kind == "content_block_start":
                blocks[event.index] = _block_param(event.content_block)
                if blocks[event.index]["type"] == "tool_use":
                    bufs[event.index] = ""
            elif kind == "content_block_delta":
                _apply_delta(blocks[event.index], bufs, event.index, event.delta)
            elif kind == "content_block_stop" and event.index in bufs:
                block = blocks[event.index]
                raw = bufs.pop(event.index)
                try:
                    block["input"] = json.loads(raw) if raw.strip() else {}
                except json.JSONDecodeError as exc:
                    malformed[block["id"]] = f"tool input is not valid JSON ({exc.msg}): {raw[:200]}"
                    block["input"] = {}
            elif kind == "message_delta":
                stop_reason = event.delta.stop_reason
                if event.usage is not None:
                    usage.update(event.usage.model_dump(mode="json", exclude_none=True))
            elif kind == "message_stop":
                done = True
    if not done:
        raise IncompleteResponse("the response stream ended before message_stop")
    content = [blocks[i] for i in sorted(blocks)]
    _check_inputs(content, malformed)
    return Reply(content, stop_reason, usage, model, malformed)


def _apply_delta(block: dict[str, Any], bufs: dict[int, str], index: int, delta: Any) -> None:
    kind = delta.type
    if kind == "text_delta":
        block["text"] = block.get("text", "") + delta.text
    elif kind == "thinking_delta":
        block["thinking"] = block.get("thinking", "") + delta.thinking
    elif kind == "signature_delta":
        block["signature"] = delta.signature
    elif kind == "input_json_delta":
        bufs[index] = bufs.get(index, "") + delta.partial_json
