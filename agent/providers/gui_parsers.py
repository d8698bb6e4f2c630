"""Parsers for open-weight GUI models' text actions. Nothing here executes model output: actions are read
with ``ast`` and only literal arguments are accepted (``ast.literal_eval``), so a reply is data, never code.

Each parser returns a ``Parsed``: canonical computer actions whose points are still in the model's own space
(``Point``; mapped to model-space pixels by ``agent.providers.compat``), plus the model's words, and whether
it finished or asked the user something. Anything unreadable raises ``ParseError`` with a hint the model can
act on; the adapter turns it into an error tool result.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

Point = tuple[float, float]


class ParseError(ValueError):
    pass


@dataclass
class Parsed:
    thought: str = ""
    actions: list[dict[str, Any]] = field(default_factory=list)  # canonical; "coordinate" etc. hold a Point
    final: str | None = None  # finished/terminate/answer: the model's last words
    question: str | None = None  # call_user: what to ask the user


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError as exc:
        raise ParseError(f"arguments must be plain literals, got {ast.unparse(node)[:60]}") from exc


def _call(text: str) -> tuple[str, list[Any], dict[str, Any]]:
    """``name(args...)`` -> (dotted name, positional literals, keyword literals)."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ParseError(f"cannot read the action {text.strip()[:80]!r}: {exc.msg}") from exc
    node = tree.body
    if not isinstance(node, ast.Call):
        raise ParseError(f"the action must be a call like click(...), got {text.strip()[:80]!r}")
    name = ast.unparse(node.func)
    return name, [_literal(a) for a in node.args], {k.arg or "": _literal(k.value) for k in node.keywords}


def _numbers(value: Any) -> list[float]:
    found = re.findall(r"-?\d+(?:\.\d+)?", str(value))
    if len(found) not in (2, 4):
        raise ParseError(f"a point needs two numbers (x, y), got {value!r}")
    nums = [float(n) for n in found]
    return nums if len(nums) == 2 else [(nums[0] + nums[2]) / 2, (nums[1] + nums[3]) / 2]  # a box: its centre


def _point(value: Any) -> Point:
    x, y = _numbers(value)
    return x, y


def _key_text(keys: Any, sep: str) -> str:
    parts = keys if isinstance(keys, list) else str(keys).split(sep) if isinstance(keys, str) else []
    parts = [str(p).strip() for p in parts if str(p).strip()]
    if not parts:
        raise ParseError(f"no keys given in {keys!r}")
    return "+".join(p if len(p) == 1 else p.lower() for p in parts)


def _scroll(at: Point | None, direction: Any, clicks: int) -> dict[str, Any]:
    if direction not in ("up", "down", "left", "right"):
        raise ParseError(f"direction must be up, down, left or right, got {direction!r}")
    action: dict[str, Any] = {"action": "scroll", "scroll_direction": direction, "scroll_amount": clicks}
    if at is not None:
        action["coordinate"] = at
    return action


def _clicks(amount: Any) -> tuple[int, bool]:
    """(wheel clicks, positive?) from a scroll amount: clicks, or pixels at ~100 a click when large."""
    if not isinstance(amount, int | float) or isinstance(amount, bool):
        raise ParseError(f"a scroll amount must be a number, got {amount!r}")
    size = abs(float(amount))
    return max(1, min(50, round(size if size <= 50 else size / 100))), amount > 0


# ---- UI-TARS-1.5: "Thought: …\nAction: click(start_box='(x,y)')" ---------------------------------------
_UITARS_CLICKS = {"click": "left_click", "left_single": "left_click", "left_double": "double_click",
                  "right_single": "right_click", "hover": "mouse_move"}


def parse_uitars(text: str) -> Parsed:
    thought, sep, action_part = text.partition("Action:")
    if not sep:
        raise ParseError("no 'Action:' line: answer as 'Thought: ...' then 'Action: click(start_box=\\'(x,y)\\')'")
    out = Parsed(thought=thought.replace("Thought:", "", 1).strip())
    for line in [chunk.strip() for chunk in action_part.strip().split("\n\n") if chunk.strip()]:
        name, args, kw = _call(line.replace("<|box_start|>", "").replace("<|box_end|>", ""))
        box = kw.get("start_box", kw.get("point", args[0] if args else None))
        if name in _UITARS_CLICKS:
            out.actions.append({"action": _UITARS_CLICKS[name], "coordinate": _point(box)})
        elif name in ("drag", "select"):
            end = kw.get("end_box", kw.get("end_point"))
            out.actions.append({"action": "left_click_drag", "start_coordinate": _point(box),
                                "coordinate": _point(end)})
        elif name in ("hotkey", "press", "keydown"):
            out.actions.append({"action": "key", "text": _key_text(kw.get("key", kw.get("hotkey", box)), " ")})
        elif name == "type":
            content = kw.get("content", box)
            if not isinstance(content, str) or not content:
                raise ParseError("type needs content='...'")
            out.actions.append({"action": "type", "text": content})
        elif name == "scroll":
            out.actions.append(_scroll(_point(box) if box is not None else None, kw.get("direction"), 5))
        elif name == "wait":
            out.actions.append({"action": "wait", "duration": 5})
        elif name == "finished":
            out.final = str(kw.get("content", box or "")) or "done"
        elif name == "call_user":
            out.question = out.thought or "I need your help to continue."
        else:
            raise ParseError(f"unknown action {name!r}")
    return out


# ---- Qwen2.5-VL / Qwen3-VL: <tool_call>{"name": "computer_use", "arguments": {...}}</tool_call> -----------
_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
_QWEN_SAME = {"left_click", "right_click", "middle_click", "double_click", "triple_click", "mouse_move"}


def parse_qwen(text: str) -> Parsed:
    calls = _TOOL_CALL.findall(text)
    out = Parsed(thought=_TOOL_CALL.sub("", text).strip())
    if not calls:
        if "<tool_call>" in text:
            raise ParseError("an unclosed <tool_call>: close it with </tool_call>")
        out.final = out.thought or "done"  # plain words: the model is done
        return out
    for raw in calls:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ParseError(f"the <tool_call> is not valid JSON ({exc}): {raw[:120]}") from exc
        args = data.get("arguments") if isinstance(data, dict) else None
        if not isinstance(args, dict) or data.get("name") != "computer_use":
            raise ParseError('a tool call must be {"name": "computer_use", "arguments": {"action": ...}}')
        out.actions.extend(_qwen_action(args, out))
    return out


def _qwen_action(args: dict[str, Any], out: Parsed) -> list[dict[str, Any]]:
    action = args.get("action")
    if action in _QWEN_SAME:
        return [{"action": action, "coordinate": _point(args.get("coordinate"))}]
    if action == "left_click_drag":  # from where the pointer is to coordinate
        return [{"action": "left_mouse_down"}, {"action": "mouse_move", "coordinate": _point(args.get("coordinate"))},
                {"action": "left_mouse_up"}]
    if action == "key":
        return [{"action": "key", "text": _key_text(args.get("keys"), "+")}]
    if action == "type":
        text = args.get("text")
        if not isinstance(text, str) or not text:
            raise ParseError("type needs a non-empty text")
        return [{"action": "type", "text": text}]
    if action in ("scroll", "hscroll"):
        clicks, up = _clicks(args.get("pixels", 0))
        direction = ("up" if up else "down") if action == "scroll" else ("right" if up else "left")
        at = _point(args["coordinate"]) if args.get("coordinate") is not None else None
        return [_scroll(at, direction, clicks)]
    if action == "wait":
        seconds = args.get("time", 2)
        if type(seconds) not in (int, float) or not 0 <= seconds <= 60:
            raise ParseError(f"time must be 0-60 seconds, got {seconds!r}")
        return [{"action": "wait", "duration": seconds}]
    if action in ("terminate", "answer"):
        out.final = str(args.get("text") or args.get("status") or "done")
        return []
    raise ParseError(f"unknown computer_use action {action!r}")


# ---- OpenCUA style: "## Action: …\n## Code:\n```python\npyautogui.click(x=…, y=…)\n```" ------------------
_CODE = re.compile(r"```(?:python)?\s*\n(.*?)```", re.S)
_PYAUTOGUI_CLICKS = {"click": "left_click", "leftClick": "left_click", "doubleClick": "double_click",
                     "tripleClick": "triple_click", "rightClick": "right_click", "middleClick": "middle_click",
                     "moveTo": "mouse_move"}


def parse_pyautogui(text: str) -> Parsed:
    blocks = _CODE.findall(text)
    out = Parsed(thought=_CODE.sub("", text).replace("## Code:", "").strip())
    if not blocks:
        raise ParseError("no code block: answer with ## Code: and a ```python block of pyautogui calls")
    for line in [ln.strip() for block in blocks for ln in block.splitlines()]:
        if not line or line.startswith("#"):
            continue
        name, args, kw = _call(line)
        out.actions.extend(_pyautogui(name, args, kw, out))
    return out


def _xy(args: list[Any], kw: dict[str, Any]) -> Point:
    x, y = kw.get("x", args[0] if args else None), kw.get("y", args[1] if len(args) > 1 else None)
    if not (isinstance(x, int | float) and isinstance(y, int | float)) or isinstance(x, bool) or isinstance(y, bool):
        raise ParseError(f"x and y must be numbers, got {x!r}, {y!r}")
    return float(x), float(y)


def _pyautogui(name: str, args: list[Any], kw: dict[str, Any], out: Parsed) -> list[dict[str, Any]]:
    short = name.removeprefix("pyautogui.")
    if short in _PYAUTOGUI_CLICKS:
        kind = _PYAUTOGUI_CLICKS[short]
        if short == "click":
            button, clicks = kw.get("button", "left"), kw.get("clicks", 1)
            kind = {("left", 1): "left_click", ("left", 2): "double_click", ("left", 3): "triple_click",
                    ("right", 1): "right_click", ("middle", 1): "middle_click"}.get((button, clicks), "")
            if not kind:
                raise ParseError(f"unsupported click(button={button!r}, clicks={clicks!r})")
        return [{"action": kind, "coordinate": _xy(args, kw)}]
    if short == "dragTo":
        return [{"action": "left_mouse_down"}, {"action": "mouse_move", "coordinate": _xy(args, kw)},
                {"action": "left_mouse_up"}]
    if short in ("write", "typewrite"):
        message = kw.get("message", args[0] if args else None)
        if not isinstance(message, str) or not message:
            raise ParseError("write needs a message string")
        return [{"action": "type", "text": message}]
    if short in ("press", "hotkey"):
        keys = list(args) if short == "hotkey" else kw.get("keys", args[0] if args else None)
        return [{"action": "key", "text": _key_text(keys if isinstance(keys, list) else [keys], "+")}]
    if short in ("scroll", "hscroll"):
        amount = kw.get("clicks", args[0] if args else None)
        at = _xy(args[1:], kw) if ("x" in kw or len(args) > 2) else None
        positive = ("up", "right")[short == "hscroll"]
        negative = ("down", "left")[short == "hscroll"]
        clicks, up = _clicks(amount)
        return [_scroll(at, positive if up else negative, clicks)]
    if name == "computer.wait":
        seconds = kw.get("seconds", args[0] if args else 2)
        if not isinstance(seconds, int | float) or not 0 <= seconds <= 60:
            raise ParseError(f"computer.wait takes 0-60 seconds, got {seconds!r}")
        return [{"action": "wait", "duration": seconds}]
    if name == "computer.terminate":
        out.final = str(kw.get("answer") or kw.get("status") or "done")
        return []
    raise ParseError(f"{name} is not an allowed action (pyautogui click/moveTo/dragTo/write/press/hotkey/scroll, "
                     "computer.wait, computer.terminate)")
