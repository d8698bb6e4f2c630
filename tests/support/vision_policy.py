"""One scripted vision policy for every fake model API: find the magenta button in the newest screenshot the
request carries, click its centre, then say so. Each fake turns the decision into its own wire format and
coordinate convention, so the same task checks every adapter's image handling and coordinate mapping.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from tests.support.fake_messages import centre, find_color
from tests.support.testpage import BIG_BUTTON_RGB

DONE = "clicked the button"


@dataclass(frozen=True, slots=True)
class Decision:
    kind: str  # "look" (wait, then look again), "click", "done"
    x: int = 0  # image pixels of the screenshot the decision was made on
    y: int = 0
    width: int = 0
    height: int = 0


def decide(images: list[bytes], clicked: bool) -> Decision:
    if clicked:
        return Decision("done")
    if not images:
        return Decision("look")
    box = find_color(images[-1], BIG_BUTTON_RGB)
    if box is None:  # the page is still loading
        return Decision("look")
    width, height = Image.open(io.BytesIO(images[-1])).size
    x, y = centre(box)
    return Decision("click", x, y, width, height)


def to_grid(value: int, size: int) -> int:
    """An image pixel as a 0-1000 grid cell (the inverse of the adapters' grid rule)."""
    return (2 * value + 1) * 1000 // (2 * size)
