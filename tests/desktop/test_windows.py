"""The active window's title: read in-process from openbox's ``_NET_ACTIVE_WINDOW``, served as ``GET /window``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from Xlib import X, Xatom, Xutil
from Xlib import display as xdisplay
from Xlib.protocol import event
from Xlib.xobject.drawable import Window

from deskpilot.settings import Settings
from desktop.display import Desktop
from desktop.local import start_local_desktop
from desktop.windows import ActiveWindow, WindowInfo
from tests.desktop.conftest import MakeDesktop

PAGE_TITLE = "Ünïcødé Bank — 日本語 ✓ 🦆"
POLL_S, DEADLINE_S = 0.05, 30.0


def data_url(title: str) -> str:
    return "data:text/html;charset=utf-8," + quote(f"<!doctype html><title>{title}</title><h1>{title}</h1>")


def wait_for(read: Callable[[], WindowInfo], ok: Callable[[WindowInfo], bool],
             nudge: Callable[[], None] = lambda: None) -> WindowInfo:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        info = read()
        if ok(info) or time.monotonic() > deadline:
            return info
        nudge()
        time.sleep(POLL_S)


def activate(disp: xdisplay.Display, window: Window) -> None:
    """Ask the WM to activate ``window`` (EWMH, as a pager would: no focus-stealing prevention). Openbox does
    not focus a window mapped while it is still starting up, so tests ask rather than rely on focus-new."""
    message = event.ClientMessage(window=window, client_type=disp.intern_atom("_NET_ACTIVE_WINDOW"),
                                  data=(32, [2, X.CurrentTime, 0, 0, 0]))
    disp.screen().root.send_event(message, event_mask=X.SubstructureRedirectMask | X.SubstructureNotifyMask)
    disp.flush()


@pytest.mark.desktop
async def test_the_pages_unicode_title_comes_back_through_the_client(tmp_path: Path) -> None:
    async with start_local_desktop(800, 600, start_url=data_url(PAGE_TITLE), kiosk=True, data_dir=tmp_path,
                                   settings=Settings()) as desk:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while (title := await desk.client.active_window_title()) is None or PAGE_TITLE not in title:
            assert loop.time() < deadline, f"title never showed up, last: {title!r}"
            await asyncio.sleep(POLL_S)
        active = await desk.client.active_window()
        assert isinstance(active["id"], int) and active["id"] > 0
        assert active["title"] is not None and PAGE_TITLE in active["title"]
        # Bearer auth like every other route.
        assert desk.socket_path is not None
        transport = httpx.AsyncHTTPTransport(uds=str(desk.socket_path))
        async with httpx.AsyncClient(base_url="http://desktop", transport=transport) as http:
            for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}):
                response = await http.get("/window", headers=headers)
                assert response.status_code == 401
                assert response.json()["error"] == "unauthorized"


def test_wm_name_fallback_utf8_preference_and_no_active_window(make_desktop: MakeDesktop) -> None:
    desktop: Desktop = make_desktop(width=640, height=480, browser=False, wm=True, vnc=False)
    reader = ActiveWindow(desktop.display)
    disp = xdisplay.Display(desktop.display)
    try:
        assert reader.read() == WindowInfo(None, None)  # openbox runs, but no client window exists yet
        window = disp.screen().root.create_window(10, 10, 200, 100, 0, disp.screen().root_depth)
        window.set_wm_hints(flags=Xutil.InputHint, input=1)
        window.change_property(Xatom.WM_NAME, Xatom.STRING, 8, "Café only WM_NAME".encode("latin-1"))
        window.map()
        disp.sync()
        wid = window.id
        info = wait_for(reader.read, lambda i: i.id == wid, lambda: activate(disp, window))
        assert info == WindowInfo(wid, "Café only WM_NAME")

        # A _NET_WM_NAME wins over WM_NAME, and is UTF-8.
        window.change_property(disp.intern_atom("_NET_WM_NAME"), disp.intern_atom("UTF8_STRING"), 8,
                               "Überweisung ✓ 日本".encode())
        disp.sync()
        assert reader.read() == WindowInfo(wid, "Überweisung ✓ 日本")

        window.destroy()
        disp.sync()
        assert wait_for(reader.read, lambda i: i.id != wid) == WindowInfo(None, None)
    finally:
        disp.close()
        reader.close()
