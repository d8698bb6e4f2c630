"""The browser's DevTools signal for settling: real Xvfb + openbox + Chromium, a local site on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from desktop import browser_signal
from desktop.display import Desktop
from desktop.input import XInput
from desktop.screen import Screenshotter
from desktop.settle import SettleRule, wait_settled
from tests.desktop.conftest import MakeDesktop
from tests.support.loopback_site import LoopbackSite
from tests.support.procnet import socket_inodes_of, tcp_listening_inodes
from tests.support.xpaint import px, wait_for

RULE = SettleRule()  # defaults: pixel rule 300 ms first change / 250 ms quiet; browser rule 100 / 30 (15) ms
IMG_RGB, XHR_RGB, START_RGB = (220, 30, 30), (30, 30, 220), (250, 250, 250)
IMG_AT, XHR_AT = (500, 150), (500, 550)  # screen points inside the image and the XHR-painted box (kiosk)

# The text makes the page contentful: until a new document's first contentful paint Chromium holds the old
# picture on screen and may drop input, so ``show_start`` waits for that paint before anything is clicked.
START = """<!doctype html><html><body style="margin:0;background:rgb(250,250,250)">
<a id="go" href="/staged?n={n}" style="position:absolute;left:0;top:0;width:1024px;height:768px"></a>
<p style="position:absolute;left:8px;top:740px;margin:0;font:12px sans-serif;color:#999">start {n}</p>
</body></html>"""
# The image answers 400 ms after its request, the XHR 900 ms after its: the page paints in three steps.
STAGED = """<!doctype html><html><body style="margin:0;background:rgb(255,255,255)">
<img src="/img?n={n}" width="1024" height="300" style="display:block" alt="">
<div id="box" style="height:400px;background:rgb(255,255,255)"></div>
<script>
fetch('/data?n={n}').then(r => r.text()).then(c => {{ document.getElementById('box').style.background = c; }});
</script></body></html>"""


def _png(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1024, 300), rgb).save(buf, "PNG")
    return buf.getvalue()


_LONG = "<!doctype html><html><body style='margin:0'>{}</body></html>".format("".join(
    f'<p style="margin:0;height:40px;background:hsl({k * 37 % 360},60%,50%)"></p>' for k in range(300)))


class StagedSite(LoopbackSite):
    """``/start?n=N`` links to ``/staged?n=N``, which loads an image (400 ms) and an XHR (900 ms); ``/long`` is
    tall and striped, so a smooth scroll changes every frame."""

    def __init__(self) -> None:
        image = _png(IMG_RGB)

        def route(path: str, query: str) -> tuple[bytes, str] | None:
            n = query.removeprefix("n=")
            if path == "/start":
                return START.format(n=n).encode(), "text/html"
            if path == "/staged":
                return STAGED.format(n=n).encode(), "text/html"
            if path == "/img":
                time.sleep(0.4)
                return image, "image/png"
            if path == "/data":
                time.sleep(0.9)
                return b"rgb(30, 30, 220)", "text/plain"
            if path == "/long":
                return _LONG.encode(), "text/html"
            return None

        super().__init__(route, name="staged-site")


@pytest.fixture(scope="module")
def site() -> Iterator[StagedSite]:
    s = StagedSite()
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser_desktop(make_desktop: MakeDesktop, site: StagedSite) -> Iterator[Desktop]:
    desktop = make_desktop(start_url=site.url("/start?n=0"), kiosk=True, wm=True)
    yield desktop
    desktop.stop()


def attached(desktop: Desktop) -> browser_signal.BrowserSignal:
    cdp = browser_signal.for_display(desktop.display)
    assert cdp is not None and cdp.wait_attached(30)
    return cdp


def show_start(desktop: Desktop, site: StagedSite, shots: Screenshotter, n: int) -> None:
    """Navigate to ``/start?n=N`` over the pipe and wait until it is the loaded document, has painted, shows,
    and the browser is idle. (The previous start page looks almost the same: without the document and paint
    checks a click could land while it is being replaced, and be lost.)"""
    cdp = attached(desktop)
    session = cdp.sessions()[0]
    url = site.url(f"/start?n={n}")
    cdp.send("Page.navigate", {"url": url}, session).result(10)

    def loaded() -> bool:
        state = ("location.href + ' ' + document.readyState + ' ' + performance.getEntriesByType('paint')"
                 ".some(e => e.name === 'first-contentful-paint')")
        answer = cdp.send("Runtime.evaluate", {"expression": state, "returnByValue": True}, session).result(10)
        return bool(answer.get("result", {}).get("value") == f"{url} complete true")

    wait_for(lambda: loaded() and px(shots.capture.grab_raw().to_image(), *IMG_AT) == START_RGB
             and cdp.busy() is False, timeout=30)


def test_staged_page_is_never_photographed_half_painted(browser_desktop: Desktop, site: StagedSite) -> None:
    with Screenshotter(browser_desktop.display, rule=RULE) as shots, XInput(browser_desktop.display) as inp:
        inp.move(1000, 700)
        for n in range(1, 4):
            show_start(browser_desktop, site, shots, n)
            before = shots.grab_raw()
            inp.click(1)
            settled = shots.settle(before)
            img = settled.frame.to_image()
            assert settled.by == "browser" and settled.changed and not settled.capped
            assert px(img, *IMG_AT) == IMG_RGB  # the image, answered at +400 ms
            assert px(img, *XHR_AT) == XHR_RGB  # the XHR's paint, at +900 ms
            assert settled.waited_ms >= 850
            time.sleep(0.5)
            assert shots.grab_raw() == settled.frame  # nothing left to paint


def test_no_visible_effect_returns_well_under_the_pixel_rule(browser_desktop: Desktop, site: StagedSite) -> None:
    with Screenshotter(browser_desktop.display, rule=RULE) as shots, XInput(browser_desktop.display) as inp:
        show_start(browser_desktop, site, shots, 10)
        inp.move(900, 700)
        wait_settled(shots.capture, RULE, None)
        before = shots.grab_raw()
        inp.move(901, 701)  # over the same link: no hover change, no request
        fast = shots.settle(before)
        assert fast.by == "browser" and not fast.changed and fast.frame == before
        pixels_only = wait_settled(shots.capture, RULE, shots.grab_raw())
        assert pixels_only.by == "pixels" and not pixels_only.changed
        assert pixels_only.waited_ms >= RULE.first_change_ms
        assert fast.waited_ms < RULE.first_change_ms * 0.8


def test_smooth_scroll_is_photographed_after_it_ends(browser_desktop: Desktop, site: StagedSite) -> None:
    cdp = attached(browser_desktop)
    session = cdp.sessions()[0]
    cdp.send("Page.navigate", {"url": site.url("/long")}, session).result(10)
    with Screenshotter(browser_desktop.display, rule=RULE) as shots, XInput(browser_desktop.display) as inp:
        wait_for(lambda: px(shots.capture.grab_raw().to_image(), 5, 5) != START_RGB and cdp.busy() is False,
                 timeout=30)
        inp.move(500, 400)
        for direction in ("down", "up", "down"):
            before = shots.grab_raw()
            inp.scroll(direction, 5)
            settled = shots.settle(before)
            assert settled.by == "browser" and settled.changed and not settled.capped
            time.sleep(0.5)
            assert shots.grab_raw() == settled.frame  # not mid-scroll


def test_the_channel_is_a_pipe_not_a_port(browser_desktop: Desktop) -> None:
    attached(browser_desktop)
    pid = browser_desktop.pid("browser")
    assert pid is not None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"--remote-debugging-pipe" in cmdline
    assert not any(arg.startswith(b"--remote-debugging-port") for arg in cmdline)
    assert os.readlink(f"/proc/{pid}/fd/3").startswith("pipe:")
    assert os.readlink(f"/proc/{pid}/fd/4").startswith("pipe:")
    held = socket_inodes_of(str(browser_desktop.workdir))
    assert held, "chromium holds sockets (X, its own IPC): the search found its processes"
    assert not held & tcp_listening_inodes()  # no TCP listener anywhere in the browser's process tree
    assert not list(browser_desktop.workdir.glob("profile-*/DevToolsActivePort"))


def test_restarted_browser_reattaches_and_a_dead_one_falls_back(make_desktop: MakeDesktop,
                                                                 site: StagedSite) -> None:
    desktop = make_desktop(start_url=site.url("/start?n=20"), kiosk=True, wm=True)
    with Screenshotter(desktop.display, rule=RULE) as shots, XInput(desktop.display) as inp:
        first = attached(desktop)
        desktop.restart("browser")
        second = attached(desktop)
        assert second is not first and not first.alive and first.busy() is None
        show_start(desktop, site, shots, 21)
        inp.move(900, 700)
        before = shots.grab_raw()
        inp.click(1)
        # A freshly restarted browser on a loaded machine can take longer than the default give-up window to
        # see the click; that window isn't what this test is about, reattaching is.
        settled = shots.settle(before, dataclasses.replace(RULE, first_change_ms=2000))
        assert settled.by == "browser" and px(settled.frame.to_image(), *XHR_AT) == XHR_RGB

        pid = desktop.pid("browser")
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)  # the browser dies: the pipe closes, settling uses the pixels
        wait_for(lambda: not second.alive, timeout=10)
        before = shots.grab_raw()
        t0 = time.monotonic()
        dead = shots.settle(before)
        assert dead.by == "pixels" and time.monotonic() - t0 < RULE.cap_ms / 1000
        desktop.restart("browser")
        third = attached(desktop)
        assert third.alive and third.busy() is not None
    desktop.stop()
    assert browser_signal.for_display(desktop.display) is None
