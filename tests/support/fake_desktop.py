"""A desktop backend without X, for the control-flow tests of the web floor (pause, cancel, approvals,
takeover, restart) whose subject is the service, not the screen.

``FakeBackend`` implements ``desktop.backends.base.DesktopBackend``; each handle's client is a ``FakeDesktop``,
which answers like ``desktop.client.DesktopClient`` (``tool``, ``screenshot``, ``info``, ``frame``,
``active_window``, ``healthz``, ``aclose``) with no daemon and no display behind it::

    desktops = FakeBackend()
    app = create_app(settings, backend=desktops)
    held = desktops.block(Match("bash", "sleep"))     # matching actions wait until held.release()
    desktops.fail(ToolError("boom"), Match("bash"))    # ...or raise (DesktopLostError: the desktop is gone)
    desktops.still(Match("computer", "left_click"))    # ...or change nothing on the screen (meta.changed False)
    desktops.answer(Match("bash", "curl"), ToolResult(output="<html>…"))  # ...or give this result
    desktops.lose(session_id)                          # every later call raises DesktopLostError
    desktops.commands(session_id)                      # the bash commands that started, in order

The screen is a picture of what was done (the pointer, every click, the text typed, an action counter)
drawn with Pillow: the same actions always give the same bytes. Nothing is executed: a bash command or an
editor call is recorded and answered, never run. Tests read and steer it from their own thread while the
service's event loop runs it, so what crosses threads is either append-only or a ``threading.Event``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import json
import threading
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

from deskpilot.errors import DesktopError, DesktopLostError
from desktop.backends.base import DesktopHandle
from desktop.client import DesktopInfo
from desktop.tools.base import ToolResult

LOOKS = {"screenshot", "zoom", "cursor_position"}
POINTER_ACTIONS = {"mouse_move", "left_click", "right_click", "middle_click", "double_click", "triple_click",
                   "left_click_drag", "left_mouse_down", "left_mouse_up"}


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call as the desktop received it (recorded when it starts, before any rule applies)."""

    session_id: str
    tool: str
    input: dict[str, Any]
    version: str

    @property
    def text(self) -> str:
        return json.dumps(self.input, sort_keys=True)


@dataclass(frozen=True, slots=True)
class Match:
    """Which calls a rule applies to: this tool (any when None) whose input, as JSON, contains ``contains``."""

    tool: str | None = None
    contains: str | None = None

    def __call__(self, call: Call) -> bool:
        return (self.tool is None or call.tool == self.tool) and (self.contains is None or self.contains in call.text)


class Block:
    """Holds matching actions until ``release()``; ``started`` is set once one is held."""

    def __init__(self, match: Match) -> None:
        self.match = match
        self.started = threading.Event()
        self.held: list[Call] = []
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def hold(self, call: Call) -> None:
        with self._lock:
            if self._released.is_set():
                return
            wake = asyncio.Event()
            self._waiters.append((asyncio.get_running_loop(), wake))
        self.held.append(call)
        self.started.set()
        await wake.wait()

    def release(self) -> None:
        """Let every held action (and every later one) go on; callable from any thread."""
        with self._lock:
            self._released.set()
            waiters, self._waiters = self._waiters, []
        for loop, wake in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nothing waits any more
                loop.call_soon_threadsafe(wake.set)

    def wait_started(self, timeout: float = 30) -> Call:
        """The first held call, once there is one (from a test's own thread)."""
        if not self.started.wait(timeout):
            raise AssertionError(f"no action matching {self.match} started within {timeout} s")
        return self.held[0]


@dataclass
class Failure:
    match: Match
    error: Exception
    times: int | None  # None: every matching call


class FakeDesktop:
    """Stands in for ``desktop.client.DesktopClient``: the same coroutines, answered from memory."""

    def __init__(self, backend: FakeBackend, session_id: str, width: int, height: int) -> None:
        self.backend, self.session_id = backend, session_id
        self.width, self.height = width, height
        self.pointer = (width // 2, height // 2)
        self.clicks: list[tuple[int, int]] = []
        self.typed = ""
        self.actions = 0
        self.title = "Fake page - Chromium"
        self.url: str | None = backend.tab_url  # the tab on screen, for URL rules
        self.lost: str | None = None
        self.closed = False

    def __repr__(self) -> str:
        return f"FakeDesktop({self.session_id!r}, {self.width}x{self.height})"

    # --- DesktopClient's interface ---
    async def tool(self, name: str, input: dict[str, Any], *, version: str = "computer_20250124") -> ToolResult:
        call = Call(self.session_id, name, dict(input), version)
        self.backend.calls.append(call)
        self._check()
        await self.backend.apply_rules(call)
        self._check()  # lost while it was held
        return self._run(call)

    async def screenshot(self, *, version: str = "computer_20250124") -> ToolResult:
        return await self.tool("computer", {"action": "screenshot"}, version=version)

    async def info(self) -> DesktopInfo:
        self._check()
        return DesktopInfo(display=":fake", screen_width=self.width, screen_height=self.height,
                           model_width=self.width, model_height=self.height, os="Fake OS", browser="Fake browser")

    async def frame(self, etag: str | None = None, *, quality: int = 60,
                    max_width: int = 1024) -> tuple[bytes, str] | None:
        self._check()
        tag = hashlib.sha256(repr(self._state()).encode()).hexdigest()[:16]
        if tag == etag:
            return None
        image = self._draw()
        if image.width > max_width:
            image = image.resize((max_width, image.height * max_width // image.width))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=quality)
        return buf.getvalue(), tag

    async def active_window(self) -> dict[str, Any]:
        self._check()
        return {"title": self.title, "id": 1}

    async def active_window_title(self) -> str | None:
        title: str | None = (await self.active_window())["title"]
        return title

    async def active_tab_url(self) -> str | None:
        return self.url

    async def healthz(self) -> bool:
        return self.lost is None and not self.closed

    def vnc_connect(self, view_only: bool) -> Any:
        raise DesktopError("the fake desktop has no VNC server")  # its handle says vnc_available=False

    async def aclose(self) -> None:
        self.closed = True

    # --- the fake screen ---
    def _check(self) -> None:
        if self.closed:
            raise DesktopLostError("desktop client is closed (the desktop was released)")
        if self.lost is not None:
            raise DesktopLostError(self.lost)

    def _run(self, call: Call) -> ToolResult:
        for match, canned in self.backend.answers:
            if match(call):
                return canned
        acts = call.tool == "computer" and call.input.get("action") not in LOOKS
        if acts and any(match(call) for match in self.backend.still_matches):
            # The app ignored it: the screen stays as it was, and the result says so, as settle's does.
            return ToolResult(image=self._png(), meta={"changed": False})
        self.actions += 1
        if call.tool == "bash":
            if call.input.get("restart"):
                return ToolResult(system="tool has been restarted.")
            return ToolResult(output=f"(fake) ran: {call.input.get('command', '')}")
        if call.tool != "computer":  # the editor: recorded, answered, nothing written
            return ToolResult(output=f"(fake) {call.input.get('command', '')} {call.input.get('path', '')}".strip())
        action = str(call.input.get("action", ""))
        coordinate = call.input.get("coordinate")
        if action in POINTER_ACTIONS and isinstance(coordinate, list) and len(coordinate) == 2:
            x, y = (int(v) for v in coordinate)
            if not (0 <= x < self.width and 0 <= y < self.height):
                return ToolResult(error=f"Coordinates ({x}, {y}) are out of bounds")
            self.pointer = (x, y)
            if action.endswith("click"):
                self.clicks.append(self.pointer)
        elif action == "type":
            self.typed += str(call.input.get("text", ""))
        elif action not in ("screenshot", "key", "scroll", "wait", "cursor_position", "hold_key", "zoom"):
            return ToolResult(error=f"Invalid action: {action}")
        output = f"X={self.pointer[0]},Y={self.pointer[1]}" if action == "cursor_position" else ""
        # Like the real computer tool: an action's result says whether the screen changed (a look's does not).
        return ToolResult(output=output, image=self._png(), meta={"changed": True} if acts else {})

    def _state(self) -> tuple[Any, ...]:
        return self.pointer, tuple(self.clicks), self.typed, self.actions

    def _draw(self) -> Image.Image:
        shade = 40 + (self.actions * 23) % 160
        image = Image.new("RGB", (self.width, self.height), (shade, 90, 200 - shade // 2))
        draw = ImageDraw.Draw(image)
        for x, y in self.clicks:
            draw.line([(x - 6, y - 6), (x + 6, y + 6)], fill=(255, 255, 0), width=2)
            draw.line([(x - 6, y + 6), (x + 6, y - 6)], fill=(255, 255, 0), width=2)
        x, y = self.pointer
        draw.ellipse([(x - 3, y - 3), (x + 3, y + 3)], fill=(255, 255, 255))
        draw.text((8, 8), f"#{self.actions} {self.typed[-80:]}", fill=(255, 255, 255))
        return image

    def _png(self) -> bytes:
        buf = io.BytesIO()
        self._draw().save(buf, "PNG")
        return buf.getvalue()


class FakeBackend:
    """A ``DesktopBackend`` whose desktops are ``FakeDesktop``s; rules (``block``, ``fail``) apply to all of them."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.desktops: list[FakeDesktop] = []  # every desktop handed out, in order (released ones too)
        self.released: list[str] = []  # handle ids, in order
        self.start_error: Exception | None = None
        self._rules: list[Block | Failure] = []
        self.still_matches: list[Match] = []  # computer actions that change nothing on the screen
        self.answers: list[tuple[Match, ToolResult]] = []  # canned results (a page's text from curl, say)
        self.tab_url: str | None = "http://fake.test/"  # the active tab of desktops handed out from now on
        self._live: dict[str, FakeDesktop] = {}
        self._ids = itertools.count(1)

    async def start(self) -> None:
        """Nothing to warm up (the runner starts every backend before the first session)."""

    async def acquire(self, session_id: str, width: int, height: int) -> DesktopHandle:
        if self.start_error is not None:
            raise self.start_error
        desktop = FakeDesktop(self, session_id, width, height)
        handle = DesktopHandle(id=f"fake-{next(self._ids)}", client=desktop,  # type: ignore[arg-type]
                               vnc_available=False, session_id=session_id)
        self.desktops.append(desktop)
        self._live[handle.id] = desktop
        return handle

    async def release(self, handle: DesktopHandle) -> None:
        desktop = self._live.pop(handle.id, None)
        if desktop is not None:
            await desktop.aclose()
            self.released.append(handle.id)

    async def aclose(self) -> None:
        for desktop in self._live.values():
            await desktop.aclose()
        self._live.clear()

    def __len__(self) -> int:
        return len(self._live)

    # --- steering, from a test ---
    def block(self, match: Match | None = None) -> Block:
        rule = Block(match or Match())
        self._rules.append(rule)
        return rule

    def answer(self, match: Match, result: ToolResult) -> None:
        """Matching calls return ``result`` (e.g. the text of a page that ``curl`` fetched)."""
        self.answers.append((match, result))

    def still(self, match: Match) -> None:
        """Matching computer actions leave the screen as it was (``meta.changed`` False), like a dead button."""
        self.still_matches.append(match)

    def fail(self, error: Exception, match: Match | None = None, times: int | None = None) -> None:
        self._rules.append(Failure(match or Match(), error, times))

    def lose(self, session_id: str, reason: str = "desktop lost: Xvfb exited") -> None:
        for desktop in self.desktops:
            if desktop.session_id == session_id and not desktop.closed:
                desktop.lost = reason

    def desktop(self, session_id: str) -> FakeDesktop:
        """The latest desktop handed out for this session."""
        for desktop in reversed(self.desktops):
            if desktop.session_id == session_id:
                return desktop
        raise LookupError(f"no desktop was acquired for session {session_id}")

    def commands(self, session_id: str | None = None) -> list[str]:
        """The bash commands that reached a desktop (started, whatever became of them), in order."""
        return [str(c.input.get("command", "")) for c in self.calls
                if c.tool == "bash" and (session_id is None or c.session_id == session_id)]

    async def apply_rules(self, call: Call) -> None:
        for rule in list(self._rules):
            if not rule.match(call):
                continue
            if isinstance(rule, Block):
                await rule.hold(call)
                continue
            if rule.times is not None:
                rule.times -= 1
                if rule.times <= 0:
                    self._rules.remove(rule)
            raise rule.error
