"""Screenshots for the model and frames for live viewers, from one display.

``Screenshotter`` glues capture → scale → encode (and settle). Everything the model sees is at model
resolution (``scaler.model_w × model_h``); ``zoom`` crops from the full-resolution frame instead.
Like ``ScreenCapture`` it is not thread-safe: the daemon uses it from its single X thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from desktop import browser_signal
from desktop.capture import RawFrame, ScreenCapture
from desktop.encode import encode_jpeg, encode_png
from desktop.scaling import Scaler
from desktop.settle import BrowserProbe, Settled, SettleRule, wait_settled

# Downscaling 1920×1080 → 1366×768 (Pillow, this machine): Lanczos 64 ms, bicubic 24 ms, bilinear 16 ms.
# Bicubic keeps small glyphs crisp at these mild ratios for a third of Lanczos' cost; unscaled screens
# (the common 1024×768) skip resizing altogether.
RESAMPLE = Image.Resampling.BICUBIC


@dataclass(frozen=True, slots=True)
class JpegFrame:
    """A live-view frame. ``data`` is ``None`` when the caller's ETag still matches (nothing to send)."""

    data: bytes | None
    etag: str
    width: int
    height: int


class Screenshotter:
    """Screenshots of ``display`` for the model, and JPEG frames for viewers.

    ``scaler`` defaults to ``Scaler.for_screen`` of the real screen size; ``rule`` is how screenshots settle
(``SettleRule.from_settings``).
    ``browser`` returns the browser's signal for settling, looked up at every settle (the browser may have been
    restarted); by default the one the ``Desktop`` running this display registered (``desktop.browser_signal``).
    """

    def __init__(self, display: str, scaler: Scaler | None = None, *, rule: SettleRule,
                 capture: ScreenCapture | None = None,
                 browser: Callable[[], BrowserProbe | None] | None = None) -> None:
        self.capture = capture or ScreenCapture(display)
        self.display = display
        self.scaler = scaler or Scaler.for_screen(*self.capture.size)
        if self.scaler.screen_size != self.capture.size:
            if capture is None:
                self.capture.close()
            raise ValueError(f"scaler is for {self.scaler.screen_size}, screen is {self.capture.size}")
        self.rule = rule
        self.browser = browser or (lambda: browser_signal.for_display(display))
        self.last_settled: Settled | None = None
        self._jpeg_cache: tuple[str, bytes, int, int] | None = None

    # --- model screenshots -------------------------------------------------------------------------------

    def grab_raw(self) -> RawFrame:
        """The current frame, raw: take one before an action and pass it to ``settled_screenshot``."""
        return self.capture.grab_raw()

    def to_model_image(self, frame: RawFrame, *, cursor: bool = True) -> Image.Image:
        """``frame`` as an RGB image at model size, with the pointer painted in (if the capture draws it)."""
        img = frame.to_image()
        if cursor and self.capture.with_cursor:
            self.capture.paint_cursor(img)
        if self.scaler.scaled:
            img = img.resize(self.scaler.model_size, RESAMPLE)
        return img

    def png_of(self, frame: RawFrame) -> bytes:
        """PNG of ``frame`` at model resolution."""
        return encode_png(self.to_model_image(frame))

    def screenshot(self) -> bytes:
        """PNG of the screen now, at model resolution."""
        return self.png_of(self.capture.grab_raw())

    def settle(self, before: RawFrame | None, rule: SettleRule | None = None) -> Settled:
        """Wait for the screen to settle after an action (``before`` = frame from just before it).

        ``rule`` overrides ``self.rule`` for this call (e.g. ``self.rule.for_pointer_move()``)."""
        self.last_settled = wait_settled(self.capture, rule or self.rule, before, browser=self.browser())
        return self.last_settled

    def settled_screenshot(self, before_raw: RawFrame | None, rule: SettleRule | None = None) -> bytes:
        """PNG at model resolution once the screen has settled; details in ``last_settled``."""
        return self.png_of(self.settle(before_raw, rule).frame)

    def zoom(self, region_model: tuple[int, int, int, int]) -> bytes:
        """PNG of a model-space region ``(x0, y0, x1, y1)`` (x1, y1 exclusive) at higher resolution.

        The region is cropped from the full-resolution frame and scaled (up or down) to fit the model size,
        keeping its aspect ratio. Raises ``ToolInputError`` for a region outside the model's image.
        """
        x0, y0, x1, y1 = self.scaler.region_to_screen(*region_model)
        crop = self.capture.grab().crop((x0, y0, x1, y1))
        cw, ch = crop.size
        factor = min(self.scaler.model_w / cw, self.scaler.model_h / ch)
        size = (max(1, round(cw * factor)), max(1, round(ch * factor)))
        if size != crop.size:
            crop = crop.resize(size, RESAMPLE)
        return encode_png(crop)

    # --- live view ----------------------------------------------------------------------------------------

    def frame_jpeg(self, quality: int = 60, max_width: int = 1024, if_none_match: str | None = None) -> JpegFrame:
        """The screen as JPEG, at most ``max_width`` wide, with an ETag from the raw pixels and the parameters.

        When ``if_none_match`` equals the current ETag nothing is encoded (``data is None``); repeated calls
        for an unchanged screen reuse the last encoding.
        """
        if not 1 <= quality <= 95:
            raise ValueError(f"quality must be in 1..95, got {quality}")
        if max_width < 16:
            raise ValueError(f"max_width must be at least 16, got {max_width}")
        frame = self.capture.grab_raw()
        cursor = self.capture.cursor() if self.capture.with_cursor else None
        width, height = frame.size
        if width > max_width:
            width, height = max_width, max(1, round(height * max_width / width))
        where = f"-c{cursor.left}x{cursor.top}" if cursor is not None else ""  # a moved pointer is a new frame
        etag = f'"{frame.digest()}{where}-q{quality}-w{width}"'
        if etag == if_none_match:
            return JpegFrame(None, etag, width, height)
        if self._jpeg_cache is not None and self._jpeg_cache[0] == etag:
            return JpegFrame(self._jpeg_cache[1], etag, width, height)
        img = frame.to_image()
        if cursor is not None:
            img.paste(cursor.image, (cursor.left, cursor.top), cursor.image)
        if img.size != (width, height):
            # Viewers want speed over fidelity: bilinear is the cheapest antialiased filter.
            img = img.resize((width, height), Image.Resampling.BILINEAR)
        data = encode_jpeg(img, quality)
        self._jpeg_cache = (etag, data, width, height)
        return JpegFrame(data, etag, width, height)

    def close(self) -> None:
        self.capture.close()

    def __enter__(self) -> Screenshotter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
