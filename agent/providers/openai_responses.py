"""OpenAI Responses API with its native computer tool (``openai`` SDK).

Tool by model: ``computer-use-preview*`` gets the older ``computer_use_preview`` tool (display size and
environment declared), every other model the GA ``{"type": "computer"}`` tool. A ``computer_call`` carries one
``action`` or a batch ``actions[]``; each action becomes one canonical ``tool_use`` (id ``<call_id>#<n>``, a
drag along a path becomes move/down/moves/up) and the batch is one group: the loop runs it in order and one
``computer_call_output`` with the screenshot after the last action answers the call.

State: **full input replay** with ``store: false``, not ``previous_response_id``. Our history is the source of
truth — it is pruned of old screenshots, answered after interrupts and restarts, and persisted — so the
request is rebuilt from it each time; nothing depends on the vendor keeping a conversation (zero-retention
works, a restarted service continues). Reasoning items are kept verbatim with their ``encrypted_content``
(``include``) and replayed in place, as the API requires for reasoning models.

``pending_safety_checks`` become a person's approval on the call's first action (``agent.actions``); the
approved checks return in ``acknowledged_safety_checks``. A reply with only text that ends in a question is a
question to the user (``stop_reason == "question"``). Coordinates are screenshot pixels = model space.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import httpx2
import openai

from agent.providers.base import ACKNOWLEDGED, VENDOR, Message, Reply, SafetyCheck, vendor_state
from agent.retry import Verdict, verdict_for_status

if TYPE_CHECKING:
    from agent.config import LoopConfig

PROVIDER = "openai"
# A 1x1 PNG: what a computer_call_output carries when its call never produced a screenshot (rejected,
# interrupted, pruned); the text sent with it says why.
BLANK_PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4//8/AAX+Av4N70a4"
                             "AAAAAElFTkSuQmCC")
SCROLL_PX_PER_CLICK = 100  # the Responses API scrolls in pixels, the desktop in wheel clicks
WAIT_S = 2.0
_BUTTONS = {"left": "left_click", "right": "right_click", "wheel": "middle_click"}
_HISTORY_KEYS = {"back": "alt+Left", "forward": "alt+Right"}  # mouse back/forward = browser history


class MalformedAction(ValueError):
    pass


class MalformedResponse(Exception):
    """A 200 whose body is not a response: retried like a cut-off stream."""


def preview_tool(model: str) -> bool:
    return model.startswith("computer-use-preview")


def _keys(keys: Any) -> str:
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys):
        raise MalformedAction(f"keys must be a non-empty list of key names, got {keys!r}")
    names = [k if len(k) == 1 and len(keys) == 1 else k.lower() for k in keys]
    return "+".join(names)


def _xy(action: dict[str, Any], x: str = "x", y: str = "y") -> list[int]:
    px, py = action.get(x), action.get(y)
    if type(px) is not int or type(py) is not int:
        raise MalformedAction(f"{action.get('type')} needs integer {x} and {y}, got {px!r}, {py!r}")
    return [px, py]


def canonical_actions(action: Any) -> list[dict[str, Any]]:
    """One Responses-API action -> canonical computer actions (model-space pixels)."""
    if not isinstance(action, dict):
        raise MalformedAction(f"an action must be an object, got {type(action).__name__}")
    kind = action.get("type")
    mods = action.get("keys")
    extra = {"text": _keys(mods)} if mods else {}
    if kind == "click":
        button = action.get("button", "left")
        if button in _HISTORY_KEYS:
            return [{"action": "key", "text": _HISTORY_KEYS[button]}]
        if button not in _BUTTONS:
            raise MalformedAction(f"unknown mouse button {button!r}")
        return [{"action": _BUTTONS[button], "coordinate": _xy(action), **extra}]
    if kind == "double_click":
        return [{"action": "double_click", "coordinate": _xy(action), **extra}]
    if kind == "move":
        return [{"action": "mouse_move", "coordinate": _xy(action)}]
    if kind == "drag":
        path = action.get("path")
        if not isinstance(path, list) or len(path) < 2:
            raise MalformedAction("drag needs a path of at least two points")
        if mods:
            raise MalformedAction("drag with held keys is not supported; press the keys separately")
        points = [_xy(p) if isinstance(p, dict) else _xy({}) for p in path]
        if len(points) == 2:
            return [{"action": "left_click_drag", "start_coordinate": points[0], "coordinate": points[1]}]
        return [{"action": "mouse_move", "coordinate": points[0]}, {"action": "left_mouse_down"},
                *({"action": "mouse_move", "coordinate": p} for p in points[1:]), {"action": "left_mouse_up"}]
    if kind == "keypress":
        return [{"action": "key", "text": _keys(action.get("keys"))}]
    if kind == "type":
        text = action.get("text")
        if not isinstance(text, str) or not text:
            raise MalformedAction("type needs a non-empty text")
        return [{"action": "type", "text": text}]
    if kind == "scroll":
        at = _xy(action)
        out = []
        for axis, neg, pos in (("scroll_y", "up", "down"), ("scroll_x", "left", "right")):
            amount = action.get(axis, 0)
            if type(amount) is not int:
                raise MalformedAction(f"{axis} must be an integer, got {amount!r}")
            if amount:
                clicks = max(1, min(50, round(abs(amount) / SCROLL_PX_PER_CLICK)))
                out.append({"action": "scroll", "coordinate": at, "scroll_direction": pos if amount > 0 else neg,
                            "scroll_amount": clicks, **extra})
        return out or [{"action": "mouse_move", "coordinate": at}]
    if kind == "wait":
        return [{"action": "wait", "duration": WAIT_S}]
    if kind == "screenshot":
        return [{"action": "screenshot"}]
    raise MalformedAction(f"unknown action type {kind!r}")


def parse_output(items: list[dict[str, Any]]) -> Reply:
    """The response's output items -> a canonical reply (the raw items ride along for replay)."""
    content: list[dict[str, Any]] = []
    reply = Reply(content, None, {})
    for item in items:
        kind = item.get("type")
        if kind == "reasoning":
            summary = "\n".join(s.get("text", "") for s in item.get("summary") or [] if isinstance(s, dict))
            if summary.strip():
                content.append({"type": "thinking", "thinking": summary})
        elif kind == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_text" and part.get("text"):
                    content.append({"type": "text", "text": part["text"]})
                elif isinstance(part, dict) and part.get("type") == "refusal":
                    content.append({"type": "text", "text": part.get("refusal", "")})
                    reply.stop_reason = "refusal"
        elif kind == "computer_call":
            _computer_call(item, reply)
    content.append({"type": VENDOR, "provider": PROVIDER, "items": items})
    uses = [b for b in content if b["type"] == "tool_use"]
    texts = [b["text"] for b in content if b["type"] == "text"]
    if uses:
        reply.stop_reason = "tool_use"
    elif reply.stop_reason is None:
        reply.stop_reason = "question" if texts and texts[-1].rstrip().endswith("?") else "end_turn"
    return reply


def _computer_call(item: dict[str, Any], reply: Reply) -> None:
    call_id = str(item.get("call_id") or item.get("id") or "call")
    batch = item.get("actions") if item.get("actions") is not None else [item.get("action")]
    ids: list[str] = []
    try:
        if not isinstance(batch, list) or not batch:
            raise MalformedAction("a computer_call needs an action or a non-empty actions list")
        inputs = [a for action in batch for a in canonical_actions(action)]
    except MalformedAction as exc:
        use_id = f"{call_id}#0"
        reply.content.append({"type": "tool_use", "id": use_id, "name": "computer", "input": {}})
        reply.malformed[use_id] = f"{exc} (answer with valid computer actions)"
        ids.append(use_id)
    else:
        for n, given in enumerate(inputs):
            ids.append(f"{call_id}#{n}")
            reply.content.append({"type": "tool_use", "id": ids[-1], "name": "computer", "input": given})
    checks = [SafetyCheck(str(c.get("id", "")), str(c.get("code") or "safety_check"), str(c.get("message") or ""))
              for c in item.get("pending_safety_checks") or [] if isinstance(c, dict)]
    if checks:
        reply.flag(ids[0], checks)
    reply.groups.append(ids)


def _image_url(block: dict[str, Any]) -> str | None:
    for inner in block.get("content") or []:
        if isinstance(inner, dict) and inner.get("type") == "image":
            src = inner["source"]
            return f"data:{src.get('media_type', 'image/png')};base64,{src['data']}"
    return None


def _result_text(block: dict[str, Any]) -> str:
    return "\n".join(i.get("text", "") for i in block.get("content") or [] if isinstance(i, dict)
                     and i.get("type") == "text" and i.get("text"))


def build_input(history: list[Message]) -> list[dict[str, Any]]:
    """The canonical history as Responses-API input items (full replay)."""
    items: list[dict[str, Any]] = []
    for msg in history:
        content = msg.get("content")
        if msg.get("role") == "assistant":
            state = vendor_state(msg, PROVIDER)
            if state is not None:
                items.extend(state["items"])
            continue
        if isinstance(content, str):
            items.append({"role": "user", "content": [{"type": "input_text", "text": content}]})
            continue
        calls: dict[str, list[dict[str, Any]]] = {}
        texts: list[str] = []
        for block in content or []:
            if block.get("type") == "tool_result":
                calls.setdefault(str(block["tool_use_id"]).split("#")[0], []).append(block)
            elif block.get("type") == "text":
                texts.append(block["text"])
        for call_id, results in calls.items():
            url = next((u for u in map(_image_url, reversed(results)) if u), None)
            output: dict[str, Any] = {"type": "computer_call_output", "call_id": call_id, "output": {
                "type": "computer_screenshot",
                "image_url": url or "data:image/png;base64," + base64.b64encode(BLANK_PNG).decode()}}
            acked = [c for r in results for c in r.get(ACKNOWLEDGED) or []]
            if acked:
                output["acknowledged_safety_checks"] = acked
            items.append(output)
            notes = [f"action {str(r['tool_use_id']).split('#')[-1]}: {_result_text(r)}" for r in results
                     if r.get("is_error")]
            if url is None:
                notes.append("(no screenshot was taken for this call; the image above is blank)")
            if notes:
                texts.insert(0, "\n".join(notes))
        if texts:
            items.append({"role": "user", "content": [{"type": "input_text", "text": t} for t in texts]})
    return items


def usage_of(usage: Any) -> dict[str, int]:
    data = usage if isinstance(usage, dict) else {}
    cached = int(((data.get("input_tokens_details") or {}).get("cached_tokens")) or 0)
    return {"input_tokens": int(data.get("input_tokens") or 0) - cached, "cache_read_input_tokens": cached,
            "output_tokens": int(data.get("output_tokens") or 0)}


def classify_openai(exc: BaseException) -> Verdict | None:
    if isinstance(exc, MalformedResponse):
        return Verdict(True, str(exc))
    if isinstance(exc, openai.APITimeoutError):
        return Verdict(True, "timeout")
    if isinstance(exc, openai.APIConnectionError):
        return Verdict(True, "connection error")
    if isinstance(exc, httpx2.TransportError):
        return Verdict(True, f"connection error ({type(exc).__name__})")
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        return verdict_for_status(exc.status_code, str(body.get("type") or ""), exc.response.headers,
                                  str(body.get("message") or exc.message))
    return None


class OpenAIResponsesClient:
    provider = PROVIDER

    def __init__(self, sdk: openai.AsyncOpenAI) -> None:
        self.sdk = sdk

    @classmethod
    def create(cls, api_key: str, base_url: str | None, timeout_s: float) -> OpenAIResponsesClient:
        return cls(openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s))

    def request(self, history: list[Message], config: LoopConfig) -> dict[str, Any]:
        model = config.model_name
        tool: dict[str, Any] = {"type": "computer"}
        if preview_tool(model):
            tool = {"type": "computer_use_preview", "display_width": config.width,
                    "display_height": config.height, "environment": "linux"}
        return {"model": model, "instructions": config.system, "input": build_input(history), "tools": [tool],
                "truncation": "auto", "store": False, "include": ["reasoning.encrypted_content"],
                "reasoning": {"summary": "concise" if preview_tool(model) else "auto"},
                "max_output_tokens": config.max_tokens}

    async def complete(self, history: list[Message], config: LoopConfig) -> Reply:
        # The wire JSON as sent, not the SDK's models: replayed items stay verbatim and a malformed action
        # reaches our parser (and becomes an error for the model) instead of a serializer warning.
        params = self.request(history, config)
        # The replayed input goes in as ``extra_body`` (same JSON on the wire): the SDK's typed transform walks
        # every item of a ``input=`` argument, ~150 ms a step once the history holds a few dozen items.
        raw = await self.sdk.responses.with_raw_response.create(extra_body={"input": params.pop("input")},
                                                                **params)
        data = raw.http_response.json()
        if not isinstance(data, dict) or not isinstance(data.get("output"), list):
            raise MalformedResponse("the Responses API answered without an output list")
        items = [i for i in data["output"] if isinstance(i, dict)]
        reply = parse_output(items)
        reply.usage, reply.model = usage_of(data.get("usage")), str(data.get("model") or "")
        if data.get("status") == "incomplete" and reply.stop_reason == "end_turn":
            reply.stop_reason = "max_tokens"
        return reply

    def classify(self, exc: BaseException) -> Verdict | None:
        return classify_openai(exc)

    async def close(self) -> None:
        await self.sdk.close()
