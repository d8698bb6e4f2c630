"""The conversation as message params: screenshot pruning, cache breakpoints, repair after interrupts.

Screenshot semantics (``keep`` = N, ``chunk`` = C, C is clamped to N):
with T screenshots produced so far, the oldest ``R = ceil((T - N) / C) * C`` are removed (0 while T <= N).
So a request carries **at most N** screenshots and, once T > N, between N - C + 1 and N of them; R only
changes every C screenshots, and between those removals every request starts with the previous request's
prompt verbatim — the prompt cache keeps hitting. Removal is done in place and leaves a short text
placeholder, so the count is the same after a restart from saved history. Defaults N=5, C=3: the model
always sees the last 3 screenshots (the reference's default), never more than 5 (≈5.5k image tokens at
XGA, bounded for rate limits), and the cached prefix is rewritten once every 3 steps.

Cache breakpoints (``cache_control: ephemeral``): on the system prompt (which also covers the tools),
on the last block of the two most recent user turns — the newest writes the cache, the one before reads
what the previous request wrote — and on the user turn just before the one holding the oldest screenshot
still sent (the *anchor*). The anchor marks the longest prefix the next removal will leave intact: when a
chunk is removed, the request reads everything up to the removed screenshots from the cache entry the
anchor wrote, instead of only the system prompt (the API looks for cached prefixes at most ~20 blocks
before a breakpoint, and the removed screenshots lie ~6 steps, ~24 blocks, back). That is the API's 4
allowed breakpoints. They are added to a copy at request time; they are not part of the stored history or
of the cached prefix.

Thinking and redacted-thinking blocks are stored as received (signature included) and never edited.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import math
from collections.abc import Callable, Collection
from typing import Any

Message = dict[str, Any]
PLACEHOLDER = "[older screenshot removed to save tokens]"
RESTART_UNKNOWN = "outcome unknown: the service restarted during this action; take a screenshot to check"
CACHE = {"type": "ephemeral"}


def _tool_results(history: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for msg in history:
        if msg.get("role") == "user" and isinstance(msg.get("content"), list):
            out.extend(b for b in msg["content"] if isinstance(b, dict) and b.get("type") == "tool_result")
    return out


def _is_image(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "image"


def _is_placeholder(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "text" and block.get("text") == PLACEHOLDER


def count_images(history: list[Message]) -> tuple[int, int]:
    """``(present, removed)`` screenshots among the tool results."""
    present = removed = 0
    for result in _tool_results(history):
        content = result.get("content")
        if isinstance(content, list):
            present += sum(1 for b in content if _is_image(b))
            removed += sum(1 for b in content if _is_placeholder(b))
    return present, removed


def images_to_remove(total: int, keep: int, chunk: int) -> int:
    chunk = max(1, min(chunk, keep))
    return 0 if total <= keep else math.ceil((total - keep) / chunk) * chunk


def prune_images(history: list[Message], keep: int, chunk: int) -> int:
    """Remove the oldest screenshots in place per the module's semantics; returns how many it removed now."""
    present, removed = count_images(history)
    todo = images_to_remove(present + removed, keep, chunk) - removed
    done = 0
    for result in _tool_results(history):
        if todo <= 0:
            break
        content = result.get("content")
        if not isinstance(content, list):
            continue
        new: list[Any] = []
        for block in content:
            if todo > 0 and _is_image(block):
                new.append({"type": "text", "text": PLACEHOLDER})
                todo -= 1
                done += 1
            else:
                new.append(block)
        result["content"] = new
    return done


def _slots(history: list[Message]) -> list[tuple[dict[str, Any], int]]:
    """Every screenshot slot (an image, or the placeholder that replaced one) as ``(tool_result, index)``."""
    return [(result, i) for result in _tool_results(history) if isinstance(result.get("content"), list)
            for i, b in enumerate(result["content"]) if _is_image(b) or _is_placeholder(b)]


def request_manifest(history: list[Message]) -> dict[str, Any]:
    """What a request carried beyond the saved history, which later loses its screenshots to pruning: the index
    of its last message and, per screenshot still sent, its slot (``_slots`` order), sha256 and media type.
    Text never changes once written, so this plus the final history rebuilds the request (``restore_request``)."""
    images = [{"slot": n, "sha256": hashlib.sha256(base64.b64decode(b["source"]["data"])).hexdigest(),
               "media_type": b["source"].get("media_type", "image/png")}
              for n, (result, i) in enumerate(_slots(history)) for b in [result["content"][i]]
              if _is_image(b) and b.get("source", {}).get("type") == "base64"]
    return {"last_message": len(history) - 1, "images": images}


def restore_request(history: list[Message], manifest: dict[str, Any],
                    image: Callable[[str, str], dict[str, Any]]) -> list[Message]:
    """The messages of the request ``manifest`` describes, from a later ``history``: its prefix, with each
    recorded slot holding ``image(sha256, media_type)`` (an image block) again. ``history`` is not changed."""
    prefix = copy.deepcopy(history[: int(manifest["last_message"]) + 1])
    slots = _slots(prefix)
    for entry in manifest["images"]:
        slot = int(entry["slot"])
        if slot >= len(slots):
            raise ValueError(f"request manifest names screenshot slot {slot}, the history has {len(slots)}")
        result, i = slots[slot]
        result["content"][i] = image(str(entry["sha256"]), str(entry["media_type"]))
    return prefix


def with_cache_breakpoints(history: list[Message], recent: int = 2, anchor: bool = True) -> list[Message]:
    """A request copy of ``history`` with breakpoints on the last block of the ``recent`` newest user turns
    and, with ``anchor``, of the user turn before the oldest screenshot still sent (module docstring)."""
    out = list(history)
    users = [i for i, msg in enumerate(out) if msg.get("role") == "user" and _last_block(msg) is not None]
    chosen = users[-recent:] if recent > 0 else []
    if anchor:
        oldest = next((i for i in users if _has_image(out[i])), None)
        before = [i for i in users if oldest is not None and i < oldest]
        if before and before[-1] not in chosen:
            chosen.append(before[-1])
    for i in chosen:
        msg = out[i]
        content = msg["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        last = dict(content[-1])
        last["cache_control"] = CACHE
        out[i] = {**msg, "content": [*content[:-1], last]}
    return out


def _last_block(msg: Message) -> Any:
    content = msg.get("content")
    if isinstance(content, str):
        return content
    return content[-1] if isinstance(content, list) and content else None


def _has_image(msg: Message) -> bool:
    content = msg.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" and isinstance(b.get("content"), list)
        and any(_is_image(inner) for inner in b["content"]) for b in content)


def pending_tool_uses(history: list[Message]) -> list[dict[str, Any]]:
    """``tool_use`` blocks of the last assistant turn that have no ``tool_result`` yet."""
    idx = next((i for i in range(len(history) - 1, -1, -1) if history[i].get("role") == "assistant"), None)
    if idx is None or not isinstance(history[idx].get("content"), list):
        return []
    uses = [b for b in history[idx]["content"] if isinstance(b, dict) and b.get("type") == "tool_use"]
    answered: set[str] = set()
    for msg in history[idx + 1:]:
        if isinstance(msg.get("content"), list):
            answered.update(str(b.get("tool_use_id")) for b in msg["content"]
                            if isinstance(b, dict) and b.get("type") == "tool_result")
    return [u for u in uses if u.get("id") not in answered]


def add_tool_result(history: list[Message], block: dict[str, Any]) -> None:
    """Append a ``tool_result`` to the user turn after the last assistant turn (creating it if needed).

    Results go before any text in that turn, as the API requires."""
    if not history or history[-1].get("role") != "user" or not _follows_tool_use(history):
        history.append({"role": "user", "content": []})
    content = history[-1]["content"]
    if isinstance(content, str):
        content = history[-1]["content"] = [{"type": "text", "text": content}]
    pos = sum(1 for b in content if isinstance(b, dict) and b.get("type") == "tool_result")
    content.insert(pos, block)


def _follows_tool_use(history: list[Message]) -> bool:
    return len(history) >= 2 and history[-2].get("role") == "assistant" and any(
        isinstance(b, dict) and b.get("type") == "tool_use" for b in history[-2].get("content") or [])


def error_result(tool_use_id: str, message: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_use_id, "is_error": True,
            "content": [{"type": "text", "text": message}]}


def answer_pending(history: list[Message], message: str, keep: Collection[str] = ()) -> list[dict[str, Any]]:
    """Answer every unanswered ``tool_use`` (but those whose id is in ``keep``) with an error result so the
    history stays valid; the ``tool_use`` blocks answered, for their ``tool_result`` events."""
    answered = [use for use in pending_tool_uses(history) if str(use["id"]) not in keep]
    for use in answered:
        add_tool_result(history, error_result(str(use["id"]), message))
    return answered


def add_user_text(history: list[Message], text: str) -> None:
    """Add the user's words: into the current user turn if there is one, else as a new turn."""
    if history and history[-1].get("role") == "user":
        content = history[-1]["content"]
        if isinstance(content, str):
            history[-1]["content"] = [{"type": "text", "text": content}, {"type": "text", "text": text}]
        else:
            content.append({"type": "text", "text": text})
    else:
        history.append({"role": "user", "content": [{"type": "text", "text": text}]})


def repair(history: list[Message]) -> list[str]:
    """After a restart: answer tool calls whose outcome was never recorded instead of re-running them."""
    return [str(use["id"]) for use in answer_pending(history, RESTART_UNKNOWN)]
