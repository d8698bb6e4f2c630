"""Shared fixtures for desktop tests: real Xvfb (and optionally openbox, x11vnc, chromium).

``make_desktop``  session-scoped factory; ``make_desktop(width=1024, height=768, start_url="about:blank",
                  kiosk=True, browser=True, wm=True, vnc=False) -> Desktop`` starts a desktop and returns it
                  already running; every desktop it made is stopped at the end of the session.
                  Desktops are shared by nothing: each call starts a new one (on a free display number).
``bare_display``  session-scoped Xvfb-only ``Desktop`` at 1024×768 (no WM, no VNC, no browser), for tests
                  that only need an X server: ``bare_display.display`` is ``":N"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import pytest

from deskpilot.settings import Settings
from desktop.display import Desktop
from desktop.settle import SettleRule
from tests.support.testpage import TestPageServer

SETTLE = SettleRule.from_settings(Settings())  # what the daemon's tools settle by, for tools built in a test


class MakeDesktop(Protocol):
    def __call__(self, width: int = 1024, height: int = 768, start_url: str = "about:blank", kiosk: bool = True,
                 browser: bool = True, wm: bool = True, vnc: bool = False) -> Desktop: ...


@pytest.fixture(scope="session")
def make_desktop() -> Iterator[MakeDesktop]:
    """Factory of started desktops; all of them are stopped when the test session ends."""
    made: list[Desktop] = []

    def factory(width: int = 1024, height: int = 768, start_url: str = "about:blank", kiosk: bool = True,
                browser: bool = True, wm: bool = True, vnc: bool = False) -> Desktop:
        desktop = Desktop(width, height, start_url=start_url, kiosk=kiosk, browser=browser, wm=wm, vnc=vnc,
                          settings=Settings())
        made.append(desktop)
        return desktop.start()

    yield factory
    for desktop in made:
        desktop.stop()


@pytest.fixture(scope="session")
def bare_display(make_desktop: Callable[..., Desktop]) -> Desktop:
    """One Xvfb-only desktop at 1024×768 shared by the whole session."""
    return make_desktop(width=1024, height=768, browser=False, wm=False, vnc=False)


@pytest.fixture(scope="module")
def page() -> Iterator[TestPageServer]:
    """The event-recording test page (``tests/support/testpage.py``), served on 127.0.0.1 for one module."""
    with TestPageServer() as server:
        yield server
