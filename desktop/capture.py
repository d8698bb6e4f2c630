"""In-process screen capture of one X display.

Uses mss's XCB backend: MIT-SHM ``XShmGetImage`` (the server writes the pixels straight into shared memory,
about 1 ms for 1024×768 on Xvfb) and, when SHM is unavailable (e.g. a remote X connection), plain
``XGetImage``. ``method`` says which one is in use. No subprocess, no file.

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
from PIL import Image

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

    def digest(self) -> str:
        """A content hash (CRC-32 of the pixels plus the size), ~1 ms for 1024×768; fine for ETags."""
        return f"{zlib.crc32(self.data):08x}{self.width:x}x{self.height:x}"


class ScreenCapture:
    """Grabs the full screen of ``display`` (e.g. ``":1"``). Use from one thread only; ``close()`` when done.

    ``with_cursor`` paints the pointer into the image (as ``scrot -p`` does) so the model sees where it is and a
    mouse move counts as a visible change. ``use_shm=False`` forces ``XGetImage``.
    """

    def __init__(self, display: str, *, with_cursor: bool = True, use_shm: bool = True) -> None:
        self.display = display
        try:
            self._mss = mss.MSS(display=display, with_cursor=with_cursor,
                                backend="xshmgetimage" if use_shm else "xgetimage")
            self._monitor: dict[str, Any] = dict(self._mss.monitors[0])  # monitor 0 = the whole root window
        except mss.exception.ScreenShotError as e:
            raise DesktopLostError(f"cannot open X display {display}: {e}") from e
        self.width = int(self._monitor["width"])
        self.height = int(self._monitor["height"])
        self._closed = False
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
        """The whole screen as BGRX bytes: the cheapest form, for equality checks and hashing."""
        if self._closed:
            raise DesktopLostError(f"capture of {self.display} is closed")
        try:
            shot = self._mss.grab(self._monitor)
        # A dead X server shows up as a NULL reply inside mss: an AssertionError (ValueError under -O).
        except (mss.exception.ScreenShotError, AssertionError, ValueError, OSError) as e:
            raise DesktopLostError(f"screen capture of {self.display} failed: {e}") from e
        return RawFrame(shot.raw, shot.width, shot.height)

    def grab(self) -> Image.Image:
        """The whole screen as an RGB Pillow image."""
        return self.grab_raw().to_image()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            # Closing after the X server died reports the lost connection again; nothing left to free.
            with contextlib.suppress(mss.exception.ScreenShotError):
                self._mss.close()

    def __enter__(self) -> ScreenCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
