"""In-process screen capture of one X display.

Uses mss's XCB backend: MIT-SHM ``XShmGetImage`` (the server writes the pixels straight into shared memory,
about 1 ms for 1024×768 on Xvfb) and, when SHM is unavailable (e.g. a remote X connection), plain
``XGetImage``. ``method`` says which one is in use. No subprocess, no file.

The pointer is kept apart from the pixels: ``grab_raw()`` is the screen's content without it (so a settling
screen is not kept "busy" by the pointer changing shape, e.g. to the progress cursor while a page loads), and
``grab()`` / ``paint_cursor()`` draw it on top, as ``scrot -p`` does, so the model sees where it is.

Not thread-safe by design: an X connection belongs to one thread. The daemon does all X work on one thread
and creates its ``ScreenCapture`` there; anything else (tests, the benchmark) makes its own.
"""

from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass
from typing import Any

import mss
import mss.exception
import numpy as np
from PIL import Image
from Xlib import error as xerror
from Xlib.display import Display
from Xlib.ext import xfixes

from deskpilot.errors import DesktopLostError


@dataclass(frozen=True, slots=True, eq=False)
class RawFrame:
    """Pixels exactly as the X server sent them: ``width × height`` BGRX, 4 bytes a pixel, no padding.

    Equality compares the pixel bytes (a memcmp, ~0.2 ms for 1024×768) — the cheap test for "did the screen
    change". ``digest()`` is a short content hash for ETags.
    """

    data: bytes | bytearray
    width: int
    height: int
    cursor_serial: int = 0  # which pointer image was showing (XFixes serial); not part of equality


    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RawFrame):
            return NotImplemented
        return (self.width, self.height) == (other.width, other.height) and self.data == other.data

    __hash__ = None  # type: ignore[assignment]  # mutable buffer: not hashable, use digest()

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def to_image(self) -> Image.Image:
        """An RGB Pillow image; converts BGRX → RGB in C, sharing nothing with later grabs."""
        return Image.frombuffer("RGB", (self.width, self.height), self.data, "raw", "BGRX", 0, 1)

    def changed_fraction(self, other: RawFrame) -> float:
        """Area of the bounding box of the pixels that differ from ``other``, as a fraction of the screen."""
        if self.size != other.size:
            return 1.0
        a = np.frombuffer(self.data, dtype=np.uint32).reshape(self.height, self.width)
        b = np.frombuffer(other.data, dtype=np.uint32).reshape(other.height, other.width)
        diff = a != b
        rows, cols = np.flatnonzero(diff.any(axis=1)), np.flatnonzero(diff.any(axis=0))
        if rows.size == 0:
            return 0.0
        area = (int(rows[-1]) - int(rows[0]) + 1) * (int(cols[-1]) - int(cols[0]) + 1)
        return area / (self.width * self.height)

    def digest(self) -> str:
        """A content hash (CRC-32 of the pixels plus the size), ~1 ms for 1024×768; fine for ETags."""
        return f"{zlib.crc32(self.data):08x}{self.width:x}x{self.height:x}"


@dataclass(frozen=True, slots=True)
class Cursor:
    """The pointer: its image (RGBA, straight alpha) and where the image's top-left corner is on screen."""

    image: Image.Image
    left: int
    top: int


class ScreenCapture:
    """Grabs the full screen of ``display`` (e.g. ``":1"``). Use from one thread only; ``close()`` when done.

    ``with_cursor`` makes ``grab()`` paint the pointer in; ``use_shm=False`` forces ``XGetImage``.
    """

    def __init__(self, display: str, *, with_cursor: bool = True, use_shm: bool = True) -> None:
        self.display = display
        self.with_cursor = with_cursor
        try:
            self._mss = mss.MSS(display=display, backend="xshmgetimage" if use_shm else "xgetimage")
            self._monitor: dict[str, Any] = dict(self._mss.monitors[0])  # monitor 0 = the whole root window
        except mss.exception.ScreenShotError as e:
            raise DesktopLostError(f"cannot open X display {display}: {e}") from e
        self.width = int(self._monitor["width"])
        self.height = int(self._monitor["height"])
        self._closed = False
        self._xlib: Display | None = None  # python-xlib connection for the pointer (XFixes)
        self._cursor_serial = 0
        self._xfixes = True  # until the server says otherwise
        self.grab_raw()  # fail now, not on the first action, and settle which method works

    @property
    def method(self) -> str:
        """``"MIT-SHM"`` or ``"XGetImage"`` — known for sure after the first grab (done in ``__init__``)."""
        status = getattr(self._mss._impl, "shm_status", None)  # mss exposes it only on the backend object
        return "MIT-SHM" if status is not None and status.name == "AVAILABLE" else "XGetImage"

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def grab_raw(self) -> RawFrame:
        """The whole screen without the pointer, as BGRX bytes: for equality checks and hashing."""
        if self._closed:
            raise DesktopLostError(f"capture of {self.display} is closed")
        try:
            shot = self._mss.grab(self._monitor)
        # A dead X server shows up as a NULL reply inside mss: an AssertionError (ValueError under -O).
        except (mss.exception.ScreenShotError, AssertionError, ValueError, OSError) as e:
            raise DesktopLostError(f"screen capture of {self.display} failed: {e}") from e
        return RawFrame(shot.raw, shot.width, shot.height, self.cursor_serial())

    def grab(self) -> Image.Image:
        """The whole screen as an RGB Pillow image, with the pointer if ``with_cursor``."""
        img = self.grab_raw().to_image()
        if self.with_cursor:
            self.paint_cursor(img)
        return img

    def _x(self) -> Display | None:
        """The python-xlib connection for the pointer, or None when the server lacks XFixes."""
        if self._closed:
            raise DesktopLostError(f"capture of {self.display} is closed")
        if self._xlib is None:
            xlib = Display(self.display)
            if not xlib.has_extension("XFIXES"):
                # No pointer to draw or watch; pixels still work. The connection stays open until close():
                # on an Xvfb without XFixes, a client disconnecting breaks the others' MIT-SHM grabs.
                self._xfixes = False
                self._xlib = xlib
                return None
            xlib.xfixes_query_version()
            # Be told whenever the displayed pointer image changes (no round trip to ask).
            xlib.xfixes_select_cursor_input(xlib.screen().root, xfixes.XFixesDisplayCursorNotifyMask)
            self._cursor_serial = xlib.xfixes_get_cursor_image(xlib.screen().root).cursor_serial
            self._xlib = xlib
        return self._xlib if self._xfixes else None

    def cursor_serial(self) -> int:
        """The XFixes serial of the pointer image showing now; it changes whenever an app sets a new cursor
        (Chromium shows its progress cursor while a navigation is pending). Reads queued events only."""
        try:
            xlib = self._x()
            while xlib is not None and xlib.pending_events():
                event = xlib.next_event()
                serial = getattr(event, "cursor_serial", None)
                if serial is not None:
                    self._cursor_serial = int(serial)
        except (xerror.DisplayError, xerror.ConnectionClosedError, OSError) as e:
            raise DesktopLostError(f"cursor of {self.display} unavailable: {e}") from e
        return self._cursor_serial

    def cursor(self) -> Cursor | None:
        """The pointer's current image and place (XFixes GetCursorImage); None without XFixes."""
        try:
            xlib = self._x()
            if xlib is None:
                return None
            reply = xlib.xfixes_get_cursor_image(xlib.screen().root)
        except (xerror.DisplayError, xerror.ConnectionClosedError, OSError) as e:
            raise DesktopLostError(f"cursor of {self.display} unavailable: {e}") from e
        w, h = reply.width, reply.height
        argb = np.array(reply.cursor_image, dtype=np.uint32).reshape(h, w)
        # Premultiplied ARGB → straight RGBA, so Pillow's alpha paste gives the right edge colours.
        alpha = (argb >> 24).astype(np.uint16)
        rgba = np.empty((h, w, 4), dtype=np.uint8)
        safe = np.maximum(alpha, 1)
        for i, shift in enumerate((16, 8, 0)):
            channel = ((argb >> shift) & 0xFF).astype(np.uint16)
            rgba[..., i] = np.minimum(channel * 255 // safe, 255)
        rgba[..., 3] = alpha
        return Cursor(Image.fromarray(rgba, "RGBA"), reply.x - reply.xhot, reply.y - reply.yhot)

    def paint_cursor(self, img: Image.Image, scale: tuple[float, float] = (1.0, 1.0)) -> None:
        """Paint the current pointer onto ``img`` (a frame of this screen, possibly resized by ``scale``)."""
        cur = self.cursor()
        if cur is None:
            return
        sprite = cur.image
        if scale != (1.0, 1.0):
            sprite = sprite.resize((max(1, round(sprite.width * scale[0])), max(1, round(sprite.height * scale[1]))),
                                   Image.Resampling.BILINEAR)
        img.paste(sprite, (round(cur.left * scale[0]), round(cur.top * scale[1])), sprite)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            # Closing after the X server died reports the lost connection again; nothing left to free.
            with contextlib.suppress(mss.exception.ScreenShotError):
                self._mss.close()
            if self._xlib is not None:
                with contextlib.suppress(xerror.DisplayError, xerror.ConnectionClosedError, OSError):
                    self._xlib.close()

    def __enter__(self) -> ScreenCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
