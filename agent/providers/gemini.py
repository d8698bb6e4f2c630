"""Gemini computer use (``google-genai`` SDK): the ``computer_use`` tool, both function vocabularies.

Legacy (Gemini 2.5 computer use, browser environment): ``open_web_browser``, ``wait_5_seconds``, ``go_back``,
``go_forward``, ``search``, ``navigate``, ``click_at``, ``hover_at``, ``type_text_at``, ``key_combination``,
``scroll_document``, ``scroll_at``, ``drag_and_drop``. Newer (desktop environment): ``click``,
``double_click``, ``move``, ``type``, ``hotkey``, ``scroll``, ``drag``, ``take_screenshot``, ``wait``. Either
is accepted whatever the model. Each function call becomes one or more canonical actions (one group);
coordinates are on Gemini's 0–1000 grid and mapped to model-space pixels with the same exact integer rule
as the desktop's screen scaling (``desktop.scaling``): grid cell g -> pixel floor((g + ½)·W / 1000); 1000
itself is the last pixel.

Browser navigation: there is no browser endpoint on the desktop daemon, so ``navigate``/``search`` focus the
address bar with ctrl+L and type the URL with a newline, and ``go_back``/``go_forward`` are alt+Left/Right:
the browser's own shortcuts, never text typed into whatever page has focus. A URL is checked first
(http/https/about/file, no whitespace).

``safety_decision: require_confirmation`` on a call becomes a person's approval (``agent.actions``); only an
approved call's function response carries ``safety_acknowledgement: "true"``. Model turns are replayed as
received (thought signatures included): full replay, like the other adapters.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import TYPE_CHECKING, Any

import httpx
import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from agent.providers.base import ACKNOWLEDGED, VENDOR, Message, Reply, SafetyCheck, vendor_state
from agent.retry import Verdict, verdict_for_status
from deskpilot.errors import ToolInputError
from desktop.scaling import Scaler

if TYPE_CHECKING:
    from agent.config import LoopConfig

PROVIDER = "gemini"
GRID = 1000
SCROLL_CLICKS = 5  # scroll_document / scroll without a magnitude
PX_PER_CLICK = 100
_SCHEMES = ("http://", "https://", "about:", "file://")


class MalformedCall(ValueError):
    pass


class Grid:
    """Gemini's 0–1000 grid <-> model-space pixels (exact integer rounding, see the module docstring)."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._scaler = Scaler(width, height, GRID, GRID)

    def to_pixels(self, x: Any, y: Any) -> list[int]:
        if type(x) is not int or type(y) is not int:
            if isinstance(x, float) and isinstance(y, float) and x.is_integer() and y.is_integer():
                x, y = int(x), int(y)
            else:
                raise MalformedCall(f"coordinates must be integers on the 0-1000 grid, got {x!r}, {y!r}")
        try:
            return list(self._scaler.to_screen(GRID - 1 if x == GRID else x, GRID - 1 if y == GRID else y))
        except ToolInputError as exc:
            raise MalformedCall(f"coordinates {x}, {y} are outside the 0-1000 grid") from exc

    def to_grid(self, x: int, y: int) -> tuple[int, int]:
        return self._scaler.to_model(x, y)


def _keys(value: Any) -> str:
    parts = value if isinstance(value, list) else str(value).split("+") if isinstance(value, str) else None
    if not parts or not all(isinstance(p, str) and p.strip() for p in parts):
        raise MalformedCall(f"keys must be a key combination like 'Control+C', got {value!r}")
    return "+".join(p.strip() if len(p.strip()) == 1 else p.strip().lower() for p in parts)


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value.strip()):
        raise MalformedCall(f"url must be a single URL without spaces, got {value!r}")
    url = value.strip()
    if not url.startswith(_SCHEMES):
        url = "https://" + url
    return url


def _navigate(url: str) -> list[dict[str, Any]]:
    return [{"action": "key", "text": "ctrl+l"}, {"action": "type", "text": url + "\n"}]


def _scroll(at: list[int], direction: Any, clicks: int) -> dict[str, Any]:
    if direction not in ("up", "down", "left", "right"):
        raise MalformedCall(f"direction must be up, down, left or right, got {direction!r}")
    return {"action": "scroll", "coordinate": at, "scroll_direction": direction, "scroll_amount": clicks}


def _type_at(at: list[int] | None, text: Any, enter: Any, clear: Any) -> list[dict[str, Any]]:
    if not isinstance(text, str) or not text:
        raise MalformedCall("text must be a non-empty string")
    out: list[dict[str, Any]] = [{"action": "left_click", "coordinate": at}] if at is not None else []
    if clear:
        out += [{"action": "key", "text": "ctrl+a"}, {"action": "key", "text": "BackSpace"}]
    return [*out, {"action": "type", "text": text + ("\n" if enter else "")}]  # Enter visible to the policy


def canonical_actions(name: str, args: dict[str, Any], grid: Grid) -> list[dict[str, Any]]:
    """One Gemini function call -> canonical computer actions."""

    def at(x: str = "x", y: str = "y") -> list[int]:
        return grid.to_pixels(args.get(x), args.get(y))

    def clicks(magnitude: Any, along: int) -> int:
        if magnitude is None:
            return SCROLL_CLICKS
        if type(magnitude) not in (int, float) or magnitude <= 0:
            raise MalformedCall(f"magnitude must be a positive number, got {magnitude!r}")
        return max(1, min(50, round(float(magnitude) * along / GRID / PX_PER_CLICK)))

    centre = [grid.width // 2, grid.height // 2]
    if name in ("open_web_browser", "take_screenshot", "screenshot"):
        return [{"action": "screenshot"}]
    if name == "wait_5_seconds":
        return [{"action": "wait", "duration": 5}]
    if name == "wait":
        seconds = args.get("seconds", 2)
        if type(seconds) not in (int, float) or not 0 <= seconds <= 60:
            raise MalformedCall(f"seconds must be 0-60, got {seconds!r}")
        return [{"action": "wait", "duration": seconds}]
    if name == "go_back":
        return [{"action": "key", "text": "alt+Left"}]
    if name == "go_forward":
        return [{"action": "key", "text": "alt+Right"}]
    if name == "search":
        return _navigate("https://www.google.com/")
    if name == "navigate":
        return _navigate(_url(args.get("url")))
    if name in ("click_at", "click"):
        button = args.get("button", "left")
        kinds = {"left": "left_click", "right": "right_click", "middle": "middle_click"}
        if button not in kinds:
            raise MalformedCall(f"button must be left, right or middle, got {button!r}")
        return [{"action": kinds[button], "coordinate": at()}]
    if name == "double_click":
        return [{"action": "double_click", "coordinate": at()}]
    if name in ("hover_at", "move", "hover"):
        return [{"action": "mouse_move", "coordinate": at()}]
    if name == "type_text_at":
        return _type_at(at(), args.get("text"), args.get("press_enter", True), args.get("clear_before_typing", True))
    if name == "type":
        where = at() if "x" in args or "y" in args else None
        return _type_at(where, args.get("text"), args.get("press_enter", False), args.get("clear_before_typing", False))
    if name in ("key_combination", "hotkey"):
        return [{"action": "key", "text": _keys(args.get("keys"))}]
    if name == "scroll_document":
        return [_scroll(centre, args.get("direction"), SCROLL_CLICKS)]
    if name in ("scroll_at", "scroll"):
        where = at() if "x" in args or "y" in args else centre
        direction = args.get("direction")
        along = grid.height if direction in ("up", "down") else grid.width
        return [_scroll(where, direction, clicks(args.get("magnitude", args.get("amount")), along))]
    if name in ("drag_and_drop", "drag"):
        return [{"action": "left_click_drag", "start_coordinate": at(),
                 "coordinate": at("destination_x", "destination_y")}]
    raise MalformedCall(f"unknown function {name!r}")


def parse_content(content: dict[str, Any], grid: Grid) -> Reply:
    """The candidate's content (JSON form) -> a canonical reply; the content rides along for replay."""
    blocks: list[dict[str, Any]] = []
    reply = Reply(blocks, None, {})
    calls: list[dict[str, Any]] = []
    for part in content.get("parts") or []:
        if not isinstance(part, dict):
            continue
        if part.get("text"):
            kind = "thinking" if part.get("thought") else "text"
            blocks.append({"type": kind, kind: part["text"]})
        call = part.get("function_call")
        if isinstance(call, dict):
            calls.append(_function_call(call, grid, reply))
    blocks.append({"type": VENDOR, "provider": PROVIDER, "content": content, "calls": calls})
    texts = [b["text"] for b in blocks if b["type"] == "text"]
    reply.stop_reason = "tool_use" if calls else (
        "question" if texts and texts[-1].rstrip().endswith("?") else "end_turn")
    return reply


def _function_call(call: dict[str, Any], grid: Grid, reply: Reply) -> dict[str, Any]:
    key = str(call.get("id") or f"gc_{secrets.token_hex(6)}")
    name = str(call.get("name") or "")
    args = dict(call.get("args") or {}) if isinstance(call.get("args"), dict) else {}
    safety = args.pop("safety_decision", None)
    ids: list[str] = []
    try:
        inputs = canonical_actions(name, args, grid)
    except MalformedCall as exc:
        ids.append(f"{key}#0")
        reply.content.append({"type": "tool_use", "id": ids[0], "name": "computer", "input": {}})
        reply.malformed[ids[0]] = f"{name}: {exc}"
    else:
        for n, given in enumerate(inputs):
            ids.append(f"{key}#{n}")
            reply.content.append({"type": "tool_use", "id": ids[-1], "name": "computer", "input": given})
    if isinstance(safety, dict) and safety.get("decision") == "require_confirmation":
        reply.flag(ids[0], [SafetyCheck(key, "require_confirmation", str(safety.get("explanation") or ""))])
    reply.groups.append(ids)
    return {"key": key, "name": name, "id": call.get("id")}


def _image(block: dict[str, Any]) -> tuple[str, bytes] | None:
    for inner in block.get("content") or []:
        if isinstance(inner, dict) and inner.get("type") == "image":
            return str(inner["source"].get("media_type", "image/png")), base64.b64decode(inner["source"]["data"])
    return None


def _text(block: dict[str, Any]) -> str:
    return "\n".join(i.get("text", "") for i in block.get("content") or []
                     if isinstance(i, dict) and i.get("type") == "text" and i.get("text"))


Turns = dict[int, tuple[dict[str, Any], types.Content]]  # id(stored content) -> (it, its SDK form)


def build_contents(history: list[Message], turns: Turns | None = None) -> list[types.Content]:
    """The canonical history as Gemini contents; ``turns`` caches model turns already converted."""
    turns = {} if turns is None else turns
    contents: list[types.Content] = []
    calls: dict[str, dict[str, Any]] = {}
    for msg in history:
        content = msg.get("content")
        if msg.get("role") == "assistant":
            state = vendor_state(msg, PROVIDER)
            if state is not None:
                cached = turns.get(id(state["content"]))
                if cached is None or cached[0] is not state["content"]:
                    # JSON-mode validation: thought signatures (bytes) come back from their base64 form intact.
                    cached = state["content"], types.Content.model_validate_json(json.dumps(state["content"]))
                    turns[id(state["content"])] = cached
                contents.append(cached[1])
                calls = {c["key"]: c for c in state["calls"]}
            continue
        if isinstance(content, str):
            contents.append(types.Content(role="user", parts=[types.Part(text=content)]))
            continue
        results: dict[str, list[dict[str, Any]]] = {}
        parts: list[types.Part] = []
        for block in content or []:
            if block.get("type") == "tool_result":
                results.setdefault(str(block["tool_use_id"]).split("#")[0], []).append(block)
            elif block.get("type") == "text":
                parts.append(types.Part(text=block["text"]))
        responses = [_function_response(calls.get(key, {"name": "computer", "id": None}), group)
                     for key, group in results.items()]
        if responses or parts:
            contents.append(types.Content(role="user", parts=[*responses, *parts]))
    return contents


def _function_response(call: dict[str, Any], results: list[dict[str, Any]]) -> types.Part:
    errors = [_text(r) for r in results if r.get("is_error")]
    response: dict[str, Any] = {"url": ""}
    response.update({"error": "\n".join(errors)} if errors else {"status": "ok"})
    if any(r.get(ACKNOWLEDGED) for r in results):
        response["safety_acknowledgement"] = "true"
    image = next((i for i in map(_image, reversed(results)) if i), None)
    parts = [types.FunctionResponsePart(inline_data=types.FunctionResponseBlob(mime_type=image[0], data=image[1]))
             ] if image else None
    return types.Part(function_response=types.FunctionResponse(name=call["name"], id=call.get("id"),
                                                               response=response, parts=parts))


def usage_of(meta: Any) -> dict[str, int]:
    if meta is None:
        return {}
    cached = int(meta.cached_content_token_count or 0)
    return {"input_tokens": int(meta.prompt_token_count or 0) - cached, "cache_read_input_tokens": cached,
            "output_tokens": int(meta.candidates_token_count or 0) + int(meta.thoughts_token_count or 0)}


def classify_gemini(exc: BaseException) -> Verdict | None:
    if isinstance(exc, httpx.TimeoutException | httpx2.TimeoutException):
        return Verdict(True, "timeout")
    if isinstance(exc, httpx.TransportError | httpx2.TransportError):
        return Verdict(True, f"connection error ({type(exc).__name__})")
    if isinstance(exc, genai_errors.APIError):
        headers = getattr(exc.response, "headers", None)
        return verdict_for_status(int(exc.code or 0), str(exc.status or ""), headers, str(exc.message or ""))
    return None


class GeminiClient:
    provider = PROVIDER

    def __init__(self, sdk: genai.Client) -> None:
        self.sdk = sdk
        self._turns: Turns = {}

    @classmethod
    def create(cls, api_key: str, base_url: str | None, timeout_s: float) -> GeminiClient:
        # The SDK's own retries are off by default (no retry_options); agent.retry decides.
        # Computer use lives in v1beta (a custom base_url would otherwise default to v1).
        options = types.HttpOptions(base_url=base_url, api_version="v1beta", timeout=int(timeout_s * 1000))
        return cls(genai.Client(api_key=api_key, http_options=options))

    def request_config(self, config: LoopConfig) -> types.GenerateContentConfig:
        legacy = "2.5" in config.model_name
        env = types.Environment.ENVIRONMENT_BROWSER if legacy else types.Environment.ENVIRONMENT_DESKTOP
        return types.GenerateContentConfig(
            system_instruction=config.system, max_output_tokens=config.max_tokens,
            tools=[types.Tool(computer_use=types.ComputerUse(environment=env))])

    async def complete(self, history: list[Message], config: LoopConfig) -> Reply:
        response = await self.sdk.aio.models.generate_content(
            model=config.model_name, contents=build_contents(history, self._turns),
            config=self.request_config(config))
        if len(self._turns) > 4 * max(len(history), 16):  # turns of finished runs
            self._turns.clear()
        candidate = response.candidates[0] if response.candidates else None
        if candidate is None or candidate.content is None:
            reason = str(getattr(candidate, "finish_reason", "") or "no candidate")
            return Reply([{"type": "text", "text": f"(the model returned nothing: {reason})"}],
                         "refusal" if "SAFETY" in reason else "end_turn", usage_of(response.usage_metadata))
        reply = parse_content(candidate.content.model_dump(mode="json", exclude_none=True),
                              Grid(config.width, config.height))
        reply.usage, reply.model = usage_of(response.usage_metadata), str(response.model_version or "")
        return reply

    def classify(self, exc: BaseException) -> Verdict | None:
        return classify_gemini(exc)

    async def close(self) -> None:
        await self.sdk.aio.aclose()
