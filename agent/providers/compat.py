"""Open-weight GUI models over an OpenAI-compatible chat API (vLLM, SGLang, Ollama, TGI) via the ``openai``
SDK with a ``base_url``.

A family (picked from the model name) fixes the prompt, the parser (``gui_parsers``), how the screenshot is
resized and what coordinates mean:

=============  ======================================  ==============  =====================================
family         output                                  image           coordinates
=============  ======================================  ==============  =====================================
UI-TARS-1.5    ``Thought:``/``Action: click(...)``     smart_resize 28  pixels of the resized image
Qwen2.5-VL     ``<tool_call>`` computer_use JSON       smart_resize 28  pixels of the resized image
Qwen3-VL       ``<tool_call>`` computer_use JSON       smart_resize 32  0–1000 grid
OpenCUA        ``## Code:`` pyautogui calls            smart_resize 28  pixels of the resized image (or 0–1)
=============  ======================================  ==============  =====================================

Points map to model-space pixels with the desktop's exact integer rule (``desktop.scaling``: the pixel that
holds the centre of the source pixel). These models have no screenshot action, so a run starts with one
screenshot taken without asking the model (a synthetic first step, no tokens). The model's raw text is kept
for replay; a reply it cannot parse is answered with an error result it can correct.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx2
import openai
from PIL import Image

from agent.providers import gui_parsers as gp
from agent.providers.base import VENDOR, Message, Reply, vendor_state
from agent.providers.openai_responses import MalformedResponse, classify_openai
from agent.retry import Verdict
from deskpilot.errors import ToolInputError
from desktop.encode import encode_png
from desktop.scaling import Scaler

if TYPE_CHECKING:
    from agent.config import LoopConfig

PROVIDER = "openai-compatible"
START = "start"  # id prefix of the synthetic first screenshot


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 4 * 28 * 28,
                 max_pixels: int = 16384 * 28 * 28) -> tuple[int, int]:
    """Qwen-VL's ``smart_resize`` (qwen_vl_utils): both sides multiples of ``factor``, area within bounds."""
    if min(height, width) <= 0 or max(height, width) / min(height, width) > 200:
        raise ValueError(f"cannot resize a {width}x{height} image")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    factor: int
    coords: Literal["resized", "grid"]
    prompt: Callable[[int, int], str]  # (resized width, height) -> system prompt
    parse: Callable[[str], gp.Parsed]

    def image_size(self, width: int, height: int) -> tuple[int, int]:
        h, w = smart_resize(height, width, self.factor, 4 * self.factor ** 2, 16384 * self.factor ** 2)
        return w, h

    def scaler(self, width: int, height: int) -> Scaler:
        """Model-space pixels (``screen`` side) <-> this family's coordinate space (``model`` side)."""
        if self.coords == "grid":
            return Scaler(width, height, 1000, 1000)
        w, h = self.image_size(width, height)
        return Scaler(width, height, w, h)


def _uitars_prompt(width: int, height: int) -> str:
    return f"""You are a GUI agent. You are given a task and your action history, with screenshots. You need to \
perform the next action to complete the task. The screenshots are {width}x{height} pixels.

## Output Format
```
Thought: ...
Action: ...
```

## Action Space
click(start_box='<|box_start|>(x1,y1)<|box_end|>')
left_double(start_box='<|box_start|>(x1,y1)<|box_end|>')
right_single(start_box='<|box_start|>(x1,y1)<|box_end|>')
drag(start_box='<|box_start|>(x1,y1)<|box_end|>', end_box='<|box_start|>(x3,y3)<|box_end|>')
hotkey(key='ctrl c') # Split keys with a space and use lowercase. Also, do not use more than 3 keys in one \
hotkey action.
type(content='xxx') # Use escape characters \\', \\", and \\n in content part to ensure we can parse the content in \
normal python string format. If you want to submit your input, use \\n at the end of content.
scroll(start_box='<|box_start|>(x1,y1)<|box_end|>', direction='down or up or right or left')
wait() #Sleep for 5s and take a screenshot to check for any changes.
finished(content='xxx') # Use escape characters \\', \\", and \\n in content part to ensure we can parse the content \
in normal python string format.
call_user() # Submit the task and call the user when the task is unsolvable, or when you need the user's help.

## Note
- Use English in `Thought` part.
- Write a small plan and finally summarize your next action (with its target element) in one sentence in `Thought` part.
"""


def _qwen_prompt(space: str) -> Callable[[int, int], str]:
    def prompt(width: int, height: int) -> str:
        size = "1000x1000 (relative coordinates, 0-1000 on each axis)" if space == "grid" else f"{width}x{height}"
        return f"""You are a helpful assistant operating a computer.

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{"type": "function", "function": {{"name": "computer_use", "description": "Use a mouse and keyboard to interact \
with a computer, and take screenshots. The screen's resolution is {size}.", "parameters": {{"properties": \
{{"action": {{"type": "string", "enum": ["key", "type", "mouse_move", "left_click", "left_click_drag", "right_click", \
"middle_click", "double_click", "triple_click", "scroll", "hscroll", "wait", "terminate", "answer"]}}, "keys": \
{{"type": "array"}}, "text": {{"type": "string"}}, "coordinate": {{"type": "array"}}, "pixels": {{"type": "number"}}, \
"time": {{"type": "number"}}, "status": {{"type": "string", "enum": ["success", "failure"]}}}}, "required": \
["action"], "type": "object"}}}}}}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""

    return prompt


def _opencua_prompt(width: int, height: int) -> str:
    return f"""You are a GUI agent. You are given a task and a screenshot of the screen ({width}x{height} pixels). \
You need to perform a series of pyautogui actions to complete the task.

Answer as:
## Thought: ...
## Action: one sentence
## Code:
```python
pyautogui.click(x=123, y=456)
```
Allowed: pyautogui.click/doubleClick/tripleClick/rightClick/moveTo/dragTo(x, y), pyautogui.write(message=...), \
pyautogui.press(...), pyautogui.hotkey(...), pyautogui.scroll(clicks, x=, y=), computer.wait(), \
computer.terminate(status='success' or 'failure', answer=...)."""


FAMILIES: dict[str, Family] = {  # matched as a substring of the lower-cased model name, in this order
    "ui-tars": Family("ui-tars-1.5", 28, "resized", _uitars_prompt, gp.parse_uitars),
    "qwen3-vl": Family("qwen3-vl", 32, "grid", _qwen_prompt("grid"), gp.parse_qwen),
    "qwen2.5-vl": Family("qwen2.5-vl", 28, "resized", _qwen_prompt("resized"), gp.parse_qwen),
    "qwen2_5-vl": Family("qwen2.5-vl", 28, "resized", _qwen_prompt("resized"), gp.parse_qwen),
    "opencua": Family("opencua", 28, "resized", _opencua_prompt, gp.parse_pyautogui),
}
DEFAULT_FAMILY = "qwen2.5-vl"


def family_for(model: str) -> Family:
    name = model.lower()
    return next((f for key, f in FAMILIES.items() if key in name), FAMILIES[DEFAULT_FAMILY])


_POINT_KEYS = ("coordinate", "start_coordinate")


def to_model_space(actions: list[dict[str, Any]], family: Family, width: int, height: int) -> list[dict[str, Any]]:
    """Points in the family's space -> model-space pixels (raises ``gp.ParseError`` when off the image)."""
    scaler = family.scaler(width, height)
    out = []
    for action in actions:
        action = dict(action)
        for key in _POINT_KEYS:
            if key in action:
                x, y = action[key]
                if family.name == "opencua" and 0 <= x <= 1 and 0 <= y <= 1 and isinstance(x, float):
                    x, y = x * scaler.model_w, y * scaler.model_h  # OpenCUA's relative (0-1) form
                try:
                    action[key] = list(scaler.to_screen(math.floor(x), math.floor(y)))
                except ToolInputError as exc:
                    raise gp.ParseError(f"{exc.message} (the screenshot is {scaler.model_w}x{scaler.model_h})") from exc
        out.append(action)
    return out


class CompatClient:
    provider = PROVIDER

    def __init__(self, sdk: openai.AsyncOpenAI) -> None:
        self.sdk = sdk
        self._resized: dict[tuple[str, int, int], str] = {}  # (sha1, w, h) -> data URL

    @classmethod
    def create(cls, api_key: str, base_url: str, timeout_s: float) -> CompatClient:
        return cls(openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s))

    def _image_url(self, data: str, size: tuple[int, int]) -> str:
        key = (hashlib.blake2b(data.encode(), digest_size=16).hexdigest(), *size)
        if key not in self._resized:
            if len(self._resized) > 64:
                self._resized.clear()
            image = Image.open(io.BytesIO(base64.b64decode(data)))
            if image.size == size:  # already what the family expects (e.g. Qwen3-VL at 1024x768)
                self._resized[key] = "data:image/png;base64," + data
            else:  # a few percent either way: bilinear is enough; the desktop's fast PNG encoder keeps a step quick
                resized = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
                self._resized[key] = "data:image/png;base64," + base64.b64encode(encode_png(resized)).decode()
        return self._resized[key]

    def messages(self, history: list[Message], config: LoopConfig) -> list[dict[str, Any]]:
        family = family_for(config.model_name)
        size = family.image_size(config.width, config.height)
        out: list[dict[str, Any]] = [{"role": "system", "content": family.prompt(*size)}]
        for msg in history:
            if msg.get("role") == "assistant":
                state = vendor_state(msg, PROVIDER)
                if state is not None and state.get("text") is not None:
                    out.append({"role": "assistant", "content": state["text"]})
                continue
            parts: list[dict[str, Any]] = []
            content = msg.get("content")
            blocks: list[dict[str, Any]] = [{"type": "text", "text": content}] if isinstance(content, str) else (
                content or [])
            for block in blocks:
                if block.get("type") == "text":
                    parts.append({"type": "text", "text": block["text"]})
                elif block.get("type") == "tool_result":
                    for inner in block.get("content") or []:
                        if inner.get("type") == "image":
                            parts.append({"type": "image_url",
                                          "image_url": {"url": self._image_url(inner["source"]["data"], size)}})
                        elif inner.get("type") == "text" and block.get("is_error"):
                            parts.append({"type": "text", "text": f"Error: {inner['text']}"})
            if parts and out[-1]["role"] == "user":
                out[-1]["content"].extend(parts)  # one user turn between assistant turns
            elif parts:
                out.append({"role": "user", "content": parts})
        return out

    async def complete(self, history: list[Message], config: LoopConfig) -> Reply:
        if not any(m.get("role") == "assistant" for m in history):
            return _start()  # the first step of a run: these models need to see the screen before anything
        # Messages as ``extra_body`` (same JSON on the wire): the SDK's typed transform of ``messages=`` walks
        # every part of every message, screenshots included, at a cost that grows with the history.
        raw = await self.sdk.chat.completions.with_raw_response.create(
            model=config.model_name, messages=[], max_tokens=config.max_tokens, temperature=0,
            extra_body={"messages": self.messages(history, config)})
        data = raw.http_response.json()
        try:
            message = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise MalformedResponse("the chat API answered without a message") from exc
        text = message.get("content") if isinstance(message, dict) else None
        reply = parse_reply(text if isinstance(text, str) else "", config)
        usage = data.get("usage") or {}
        cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
        reply.usage = {"input_tokens": int(usage.get("prompt_tokens") or 0) - cached,
                       "cache_read_input_tokens": cached, "output_tokens": int(usage.get("completion_tokens") or 0)}
        reply.model = str(data.get("model") or "")
        return reply

    def classify(self, exc: BaseException) -> Verdict | None:
        return classify_openai(exc) if isinstance(exc, openai.APIError | httpx2.TransportError |
                                                  MalformedResponse) else None

    async def close(self) -> None:
        await self.sdk.close()


def _start() -> Reply:
    use = {"type": "tool_use", "id": f"{START}#0", "name": "computer", "input": {"action": "screenshot"}}
    return Reply([use, {"type": VENDOR, "provider": PROVIDER, "text": None}], "tool_use", {})


def parse_reply(text: str, config: LoopConfig) -> Reply:
    family = family_for(config.model_name)
    blocks: list[dict[str, Any]] = []
    reply = Reply(blocks, "end_turn", {})
    call_id = f"cc_{secrets.token_hex(6)}"
    try:
        parsed = family.parse(text)
        actions = to_model_space(parsed.actions, family, config.width, config.height)
    except gp.ParseError as exc:
        blocks.append({"type": "text", "text": text})
        blocks.append({"type": "tool_use", "id": f"{call_id}#0", "name": "computer", "input": {}})
        reply.malformed[f"{call_id}#0"] = f"could not use your answer: {exc}"
        reply.stop_reason = "tool_use"
    else:
        if parsed.thought:
            blocks.append({"type": "thinking", "thinking": parsed.thought})
        ids = [f"{call_id}#{n}" for n in range(len(actions))]
        blocks.extend({"type": "tool_use", "id": i, "name": "computer", "input": a} for i, a in zip(ids, actions,
                                                                                                     strict=True))
        if ids:
            reply.groups.append(ids)
            reply.stop_reason = "tool_use"
        elif parsed.question is not None:
            blocks.append({"type": "text", "text": parsed.question})
            reply.stop_reason = "question"
        elif parsed.final is not None:
            blocks.append({"type": "text", "text": parsed.final})
    blocks.append({"type": VENDOR, "provider": PROVIDER, "text": text})
    return reply
