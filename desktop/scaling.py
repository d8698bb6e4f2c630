"""Map coordinates between the real screen and the smaller image the model sees.

The model works best at a few known sizes (XGA 1024×768, WXGA 1280×800, FWXGA 1366×768). A screen with a
matching aspect ratio (within 0.02) that is wider than the target is shown to the model at the target size;
any other screen is shown unscaled.

Rounding (exact integer arithmetic, no floats): a pixel is the unit square ``[p, p + 1)``, and a point maps to
the pixel that contains the *centre* of its source pixel:

    to_screen(m) = floor((m + ½) · screen / model)      to_model(s) = floor((s + ½) · model / screen)

Because scaling only ever shrinks (screen > model), ``to_model(to_screen(m)) == m`` for every model pixel, and
every model pixel lands inside the screen. ``to_screen`` is what the computer tool uses for clicks;
``to_model`` reports the cursor position back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from deskpilot.errors import ToolInputError


class Target(NamedTuple):
    name: str
    width: int
    height: int


# Order matters: the first target that fits wins (same order as Anthropic's reference implementation).
TARGETS: tuple[Target, ...] = (
    Target("XGA", 1024, 768),
    Target("WXGA", 1280, 800),
    Target("FWXGA", 1366, 768),
)

ASPECT_TOLERANCE = 0.02


def _scale(v: int, num: int, den: int) -> int:
    """floor((v + ½) · num / den) in integers."""
    return ((2 * v + 1) * num) // (2 * den)


@dataclass(frozen=True, slots=True)
class Scaler:
    """Coordinate mapping for one screen size. ``model_*`` equals ``screen_*`` when unscaled."""

    screen_w: int
    screen_h: int
    model_w: int
    model_h: int

    @classmethod
    def for_screen(cls, width: int, height: int, enabled: bool = True) -> Scaler:
        if width <= 0 or height <= 0:
            raise ValueError(f"screen size must be positive, got {width}x{height}")
        if enabled:
            ratio = width / height
            for target in TARGETS:
                if abs(target.width / target.height - ratio) < ASPECT_TOLERANCE and target.width < width:
                    return cls(width, height, target.width, target.height)
        return cls(width, height, width, height)

    @property
    def scaled(self) -> bool:
        return (self.model_w, self.model_h) != (self.screen_w, self.screen_h)

    @property
    def model_size(self) -> tuple[int, int]:
        return self.model_w, self.model_h

    @property
    def screen_size(self) -> tuple[int, int]:
        return self.screen_w, self.screen_h

    def check_model_point(self, x: int, y: int) -> None:
        """Raise ToolInputError unless (x, y) is a pixel of the model's image."""
        if type(x) is not int or type(y) is not int:  # bool and float are not coordinates
            raise ToolInputError(f"Coordinates {x!r}, {y!r} must be integers")
        if not (0 <= x < self.model_w and 0 <= y < self.model_h):
            raise ToolInputError(f"Coordinates {x}, {y} are out of bounds")

    def to_screen(self, x: int, y: int) -> tuple[int, int]:
        """Model pixel → screen pixel (checked: out-of-bounds model points raise ToolInputError)."""
        self.check_model_point(x, y)
        return _scale(x, self.screen_w, self.model_w), _scale(y, self.screen_h, self.model_h)

    def to_model(self, x: int, y: int) -> tuple[int, int]:
        """Screen pixel → model pixel; screen points outside the screen are clamped onto its edge first."""
        x = min(max(x, 0), self.screen_w - 1)
        y = min(max(y, 0), self.screen_h - 1)
        return _scale(x, self.model_w, self.screen_w), _scale(y, self.model_h, self.screen_h)

    def region_to_screen(self, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
        """A model-space box ``[x0, x1) × [y0, y1)`` → the screen box covering it (edges, not pixels).

        Raises ToolInputError unless ``0 <= x0 < x1 <= model_w`` and ``0 <= y0 < y1 <= model_h``.
        """
        if any(type(v) is not int for v in (x0, y0, x1, y1)):
            raise ToolInputError(f"Region {x0!r}, {y0!r}, {x1!r}, {y1!r} must be integers")
        if not (0 <= x0 < x1 <= self.model_w and 0 <= y0 < y1 <= self.model_h):
            raise ToolInputError(
                f"Region {x0}, {y0}, {x1}, {y1} is invalid: need 0 <= x0 < x1 <= {self.model_w} "
                f"and 0 <= y0 < y1 <= {self.model_h}"
            )
        # Floor the top-left edge and ceil the bottom-right one so the box never loses a partial pixel.
        return (
            x0 * self.screen_w // self.model_w,
            y0 * self.screen_h // self.model_h,
            -(-x1 * self.screen_w // self.model_w),
            -(-y1 * self.screen_h // self.model_h),
        )
