"""A tiny HTTP server for the input test page (``testpage.html``) that collects the events the page records.

    with TestPageServer() as server:             # binds 127.0.0.1 on a free port, serves in a thread
        desktop = make_desktop(start_url=server.url, kiosk=True)
        server.wait_ready()                       # the page loaded (its window may not have focus yet)
        focus_field(server, XInput(desktop.display))  # click into the field until the page sees it
        ...act...
        clicks = server.wait_for("click")         # events of a type, waiting until at least one arrived
        server.events(), server.reset()

Every event is a dict with ``seq`` (page order), ``load`` (names the page load), ``type`` and ``t`` (epoch ms).
Mouse events add ``button``, ``buttons``, ``screenX/screenY``, ``clientX/clientY``, ``detail`` (click count),
``target`` (element id or tag) and ``ctrl/shift/alt/meta``; ``keydown/keyup`` add ``key``, ``code``,
``repeat`` and modifiers; ``input`` adds the field's ``value`` (last 5000 characters) and ``length``;
``wheel`` adds ``deltaX/deltaY/deltaMode`` and modifiers. ``mousemove`` is sampled (at most one per 40 ms
plus the resting position). ``ready`` is sent on load with ``hasFocus``. The page layout is described
at the top of ``testpage.html``; ``BIG_BUTTON`` and ``FIELD`` give the same boxes in CSS pixels.
Chromium's ``key`` names keys from its own layout; the text typed (``input`` values) is what to check.
A POST that fails is re-sent by the page and de-duplicated here (``fail_posts`` injects such failures).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from desktop.input import XInput
from desktop.keys import parse_key_action

PAGE_PATH = Path(__file__).with_name("testpage.html")
BIG_BUTTON = (400, 300, 240, 120)  # x, y, width, height in page pixels
BIG_BUTTON_RGB = (255, 0, 255)
FIELD = (20, 20, 340, 120)

FIELD_POINT = (100, 60)  # inside FIELD, in screen pixels when the page fills an unscaled kiosk window
Event = dict[str, Any]


def focus_field(page: TestPageServer, inp: XInput, at: tuple[int, int] = FIELD_POINT) -> None:
    """Click into the text field and empty it, retried until the page saw it (see ``until_delivered``)."""
    def act() -> None:
        inp.click(1, at=at)
        inp.press_combos(parse_key_action("ctrl+a BackSpace"))

    page.until_delivered(act, lambda evs: any(e["type"] == "keyup" and e["key"] == "Backspace" for e in evs))
    page.reset()


class TestPageServer:
    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._last_seq: dict[str, int] = {}  # page load -> highest seq kept: a re-sent batch is not kept twice
        self._fail_posts = 0
        self._cond = threading.Condition()
        self._page = PAGE_PATH.read_bytes()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="testpage", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> TestPageServer:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # --- reading what the page recorded ----------------------------------------------------------------
    def events(self, *types: str) -> list[Event]:
        with self._cond:
            return [e for e in self._events if not types or e["type"] in types]

    def reset(self) -> None:
        with self._cond:
            self._events.clear()

    def wait_until(self, predicate: Callable[[list[Event]], bool], timeout: float = 10.0) -> list[Event]:
        """Wait until ``predicate(all events)`` holds; return all events. AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._events):
                left = deadline - time.monotonic()
                if left <= 0:
                    summary = [(e["type"], e.get("key") or e.get("button")) for e in self._events[-30:]]
                    raise AssertionError(f"page events never matched; last events: {summary}")
                self._cond.wait(left)
            return list(self._events)

    def wait_for(self, type_: str, count: int = 1, timeout: float = 10.0) -> list[Event]:
        """Events of ``type_`` once at least ``count`` of them arrived."""
        self.wait_until(lambda evs: sum(e["type"] == type_ for e in evs) >= count, timeout)
        return self.events(type_)

    def wait_ready(self, timeout: float = 30.0) -> Event:
        return self.wait_for("ready", timeout=timeout)[-1]

    def settle(self, quiet_s: float = 0.3, timeout: float = 10.0) -> list[Event]:
        """Wait until no event arrived for ``quiet_s`` (use only where no specific event can be awaited)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while time.monotonic() < deadline:
                n = len(self._events)
                self._cond.wait(quiet_s)
                if len(self._events) == n:
                    break
            return list(self._events)

    def until_delivered(self, act: Callable[[], object], predicate: Callable[[list[Event]], bool],
                        attempts: int = 20, each_s: float = 1.5) -> list[Event]:
        """Repeat ``act`` until ``predicate`` holds: right after the browser maps, the window manager may not
        have given it the pointer or focus yet, and that first input is lost. Use it to focus, not to test.

        An attempt given up on may still be delivered late (a loaded browser, not a lost input): after a retry
        this waits for the page to go quiet, so those events land before the caller's next ``reset()``."""
        for attempt in range(attempts):
            self.reset()
            act()
            try:
                events = self.wait_until(predicate, each_s)
            except AssertionError:
                if attempt == attempts - 1:
                    raise
                continue
            return self.settle(0.3) if attempt else events
        raise AssertionError("unreachable")

    def fail_posts(self, count: int) -> None:
        """Answer the next ``count`` POSTs with 503 without keeping their events (the page must re-send)."""
        with self._cond:
            self._fail_posts = count

    def _add(self, batch: list[Event]) -> None:
        # The page keeps one POST in flight, so batches arrive in page order; not sorting by ``seq`` keeps
        # the order right across a reload too (``seq`` restarts at 1; a reload sends a new "ready").
        with self._cond:
            for event in sorted(batch, key=lambda e: e["seq"]):
                load = str(event.get("load", ""))
                if event["seq"] > self._last_seq.get(load, 0):
                    self._last_seq[load] = event["seq"]
                    self._events.append(event)
            self._cond.notify_all()

    # --- HTTP --------------------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/", "/index.html"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(server._page)))
                self.end_headers()
                self.wfile.write(server._page)

            def do_POST(self) -> None:
                if self.path != "/events":
                    self.send_error(404)
                    return
                with server._cond:
                    failing, server._fail_posts = server._fail_posts > 0, max(0, server._fail_posts - 1)
                if failing:
                    self.send_error(503)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    batch = json.loads(self.rfile.read(length))
                except ValueError:
                    self.send_error(400)
                    return
                if isinstance(batch, list):
                    server._add([e for e in batch if isinstance(e, dict) and "seq" in e and "type" in e])
                self.send_response(204)
                self.end_headers()

        return Handler
