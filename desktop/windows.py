"""The active window's id and title, read in-process from the X server (no xdotool, no subprocess).

The window manager (openbox) names the focused client in the root's ``_NET_ACTIVE_WINDOW``; its title is
``_NET_WM_NAME`` (UTF-8), or the older ``WM_NAME`` (Latin-1 / compound text) when a client sets only that.
An ``ActiveWindow`` owns one python-xlib connection, so it must be created and used on one thread only
(the daemon's X thread).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from Xlib import X, Xatom
from Xlib import display as xdisplay
from Xlib import error as xerror

from deskpilot.errors import DesktopLostError

log = logging.getLogger(__name__)
MAX_TITLE_CHARS = 1024  # a page can set any title; nobody needs more to write a rule against it


@dataclass(frozen=True, slots=True)
class WindowInfo:
    id: int | None
    title: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title}


class ActiveWindow:
    """``ActiveWindow(":3").read()`` → ``WindowInfo``; the connection is opened lazily and reopened after errors."""

    def __init__(self, display: str) -> None:
        self.display = display
        self._disp: xdisplay.Display | None = None
        self._atoms: dict[str, int] = {}

    def _connection(self) -> xdisplay.Display:
        if self._disp is None:
            try:
                disp = xdisplay.Display(self.display)
            except Exception as exc:  # Xlib raises several unrelated types for "cannot connect"
                raise DesktopLostError(f"cannot connect to {self.display}: {type(exc).__name__}") from exc
            self._atoms = {name: disp.intern_atom(name) for name in
                           ("_NET_ACTIVE_WINDOW", "_NET_WM_NAME", "UTF8_STRING")}
            self._disp = disp
        return self._disp

    def read(self) -> WindowInfo:
        """The active window now; ``WindowInfo(None, None)`` when nothing is active (or no WM runs)."""
        disp = self._connection()
        try:
            return self._read(disp)
        except xerror.XError:  # the window vanished between the two reads: treat it as "none active"
            return WindowInfo(None, None)
        except Exception as exc:  # the connection broke (X server gone): drop it, report the loss
            self.close()
            raise DesktopLostError(f"cannot read the active window: {type(exc).__name__}") from exc

    def _read(self, disp: xdisplay.Display) -> WindowInfo:
        root = disp.screen().root
        prop = root.get_full_property(self._atoms["_NET_ACTIVE_WINDOW"], Xatom.WINDOW)
        if prop is None or not len(prop.value) or int(prop.value[0]) == X.NONE:
            return WindowInfo(None, None)
        wid = int(prop.value[0])
        window = disp.create_resource_object("window", wid)
        title = _text(window.get_full_property(self._atoms["_NET_WM_NAME"], self._atoms["UTF8_STRING"]), "utf-8")
        if title is None:
            title = _text(window.get_full_property(Xatom.WM_NAME, X.AnyPropertyType), "latin-1")
        return WindowInfo(wid, title[:MAX_TITLE_CHARS] if title is not None else None)

    def close(self) -> None:
        disp, self._disp = self._disp, None
        if disp is not None:
            try:
                disp.close()
            except Exception:  # already broken: nothing left to release
                log.debug("closing the window-title connection failed", exc_info=True)


def _text(prop: Any, encoding: str) -> str | None:
    """A format-8 property as text; WM_NAME in COMPOUND_TEXT is decoded leniently (its ASCII part is exact)."""
    if prop is None or prop.format != 8:
        return None
    value = prop.value
    data = value if isinstance(value, bytes) else str(value).encode("latin-1", "replace")
    return data.decode(encoding, "replace")
