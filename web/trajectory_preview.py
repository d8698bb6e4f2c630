"""The animated preview of a trajectory: each action drawn on the screen it was planned on (as the approval
card draws it in the browser), then the final screen. Pillow only; a GIF so any browser or chat shows it."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image, ImageDraw

MAX_WIDTH = 640
FRAME_MS = 800
RED = (229, 57, 53)


def _label(action: dict[str, Any]) -> str:
    kind = action.get("action")
    if kind == "type":
        return f"type: {action.get('text', '')}"[:80]
    if kind in ("key", "hold_key"):
        return f"keys: {action.get('text', '')}"
    if action.get("command"):
        return f"$ {action['command']}"[:80]
    if action.get("type") == "answer":
        return f"answer: {action.get('text', '')}"[:80]
    return str(kind or action.get("tool") or "")


def _frame(png: bytes, action: dict[str, Any]) -> Image.Image:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    scale = min(1.0, MAX_WIDTH / image.width)
    if scale < 1.0:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(image)
    width = max(2, image.width // 300)
    r = max(6, image.width // 80)

    def point(value: Any) -> tuple[float, float] | None:
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
            return value[0] * scale, value[1] * scale
        return None

    def marker(p: tuple[float, float]) -> None:
        draw.ellipse((p[0] - r, p[1] - r, p[0] + r, p[1] + r), outline=RED, width=width)
        draw.line((p[0] - r * 1.6, p[1], p[0] + r * 1.6, p[1]), fill=RED, width=width)
        draw.line((p[0], p[1] - r * 1.6, p[0], p[1] + r * 1.6), fill=RED, width=width)

    at, start = point(action.get("coordinate")), point(action.get("start_coordinate"))
    if start and at:
        marker(start)
        draw.line((*start, *at), fill=RED, width=width)
    if at:
        marker(at)
    label = _label(action)
    if label:
        x, y = (max(4.0, min(image.width - 8.0 * len(label) - 8, at[0] - 40)), min(image.height - 24.0, at[1] + 24)) \
            if at else (6.0, 6.0)
        box = draw.textbbox((x, y), label)
        draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=(0, 0, 0))
        draw.text((x, y), label, fill=(255, 255, 255))
    return image


def preview_gif(steps: list[dict[str, Any]], shots: dict[str, bytes]) -> bytes | None:
    """``None`` when the run has no screenshot at all."""
    frames: list[Image.Image] = []
    last: str | None = None
    for step in steps:
        obs = step.get("observation_file")
        ref = obs.rsplit("/", 1)[-1] if obs else None
        if ref in shots:
            frames.append(_frame(shots[ref], step.get("action") or {}))
        after = step.get("screenshot_file")
        last = after.rsplit("/", 1)[-1] if after else last
    if last in shots:
        frames.append(_frame(shots[last], {}))
    if not frames:
        return None
    size = frames[0].size
    frames = [f if f.size == size else f.resize(size) for f in frames]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=FRAME_MS, loop=0,
                   optimize=False)
    return buf.getvalue()
