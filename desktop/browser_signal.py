"""A private line to the desktop's Chromium: is a page loading, are requests in flight, has a frame been drawn.

The pixel rule in ``desktop.settle`` cannot tell a finished page from one whose images are still on the wire,
so it must wait long quiet periods. The browser knows. ``Desktop`` starts Chromium with
``--remote-debugging-pipe``: Chromium reads DevTools commands from its fd 3 and writes replies and events to
its fd 4, NUL-separated JSON. The daemon holds the other ends of both pipes; there is no TCP port and no
socket file, so neither the model's bash nor a page can reach the channel (only a process that can already
ptrace Chromium could).

One reader thread parses what Chromium sends and keeps, per attached page target (every ``page`` target is
attached as it appears): the frames that are loading (``Page.frameStartedLoading`` → ``frameStoppedLoading``),
the navigations a page asked for that have not started loading yet (``Page.frameRequestedNavigation``, at most
``REQUESTED_NAVIGATION_TTL_S``) and the requests in flight (``Network.requestWillBeSent`` →
``loadingFinished`` / ``loadingFailed``). All of it
sits behind one lock; ``busy()`` and ``fence()`` may be called from any thread (the daemon calls them from its
X thread while settling). A closed pipe (browser gone) makes ``busy()`` return ``None``: callers then fall
back to the pixel rule. ``Desktop`` registers the signal of the browser it runs under its display
(``for_display``), and replaces it when it restarts the browser.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

CHILD_IN_FD, CHILD_OUT_FD = 3, 4  # fixed by Chromium's --remote-debugging-pipe
REQUESTED_NAVIGATION_TTL_S = 1.0  # how long a requested navigation counts as busy before it starts loading
# Long-lived requests carry no "page is still coming" meaning: never wait for them.
IGNORED_TYPES = frozenset({"WebSocket", "EventSource"})
# Counts the input events a page receives (installed in every document before its own scripts), so that
# settling can tell "the action reached the page and did nothing" from "the page has not seen it yet".
_INPUT_JS = """(() => { if (window.__deskpilotInputs === undefined) { window.__deskpilotInputs = 0;
  for (const t of ['mousedown', 'mouseup', 'click', 'keydown', 'keyup', 'wheel', 'mousemove', 'contextmenu'])
    addEventListener(t, () => { window.__deskpilotInputs++; }, {capture: true, passive: true}); }
  return window.__deskpilotInputs; })()"""
# Resolves once the images on screen are decoded and two animation frames have passed (the page has produced
# a frame with them since), with the input count then; hidden pages draw nothing and answer -1 at once.
# Without the decode wait an image that finished loading could still be painted ~30 ms after the second frame.
_FENCE_JS = """document.visibilityState !== 'visible' ? -1 : Promise.all(Array.from(document.images).filter(i => {
    if (!i.complete || !i.naturalWidth) return false;
    const b = i.getBoundingClientRect();
    return b.bottom > 0 && b.right > 0 && b.top < innerHeight && b.left < innerWidth;
  }).map(i => i.decode().catch(() => 0)))
  .then(() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(
    () => r(window.__deskpilotInputs ?? -1)))))"""


@dataclass
class _Page:
    loading: dict[str, float] = field(default_factory=dict)  # frameId -> when it started loading
    # frameId -> when the page asked for a navigation (a link click), until the browser starts loading it:
    # the renderer reports the request at once, the browser's frameStartedLoading can come well after the
    # page has drawn its next frames, and in between the action must not look like it did nothing.
    requested: dict[str, float] = field(default_factory=dict)
    requests: dict[str, float] = field(default_factory=dict)  # requestId -> when it was sent
    inputs: int | None = None  # the page's input count at its last fence


def _count(future: Future[dict[str, Any]]) -> int | None:
    if future.cancelled() or future.exception() is not None:
        return None
    value = future.result().get("result", {}).get("value")
    return value if type(value) is int and value >= 0 else None


class Fence:
    """Pending rAF fences of every attached page; ``done()`` once all answered or ``timeout_s`` passed."""

    def __init__(self, futures: dict[str, Future[dict[str, Any]]], baselines: dict[str, int | None],
                 timeout_s: float) -> None:
        self._futures, self._baselines = futures, baselines
        self._deadline = time.monotonic() + timeout_s

    def done(self) -> bool:
        return all(f.done() for f in self._futures.values()) or time.monotonic() >= self._deadline

    def saw_input(self) -> bool:
        """A page answered with more input events than at its previous fence: input reached it meanwhile."""
        for session, future in self._futures.items():
            count, before = (_count(future) if future.done() else None), self._baselines.get(session)
            if count is not None and before is not None and count > before:
                return True
        return False


class BrowserSignal:
    """DevTools over the pipe pair ``(read_fd, write_fd)`` (ours: Chromium's fd 4 and fd 3). Owns both fds."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        # The reader thread owns ``read_fd`` and closes it when it ends (closing it under a blocked read
        # would let a later read hit a reused fd number); ``write_fd`` is closed under the write lock.
        self._read_fd, self._write_fd = read_fd, write_fd
        self._write_closed = False
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified after every batch of messages
        self._version = 0
        self._write_lock = threading.Lock()
        self._pages: dict[str, _Page] = {}  # sessionId -> state
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._alive = True
        self.attached = threading.Event()  # set once a page target is attached and its domains enabled
        self._reader = threading.Thread(target=self._read_loop, name="cdp-reader", daemon=True)
        self._reader.start()
        self.send("Target.setDiscoverTargets", {"discover": True})

    # --- what settling asks -------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        with self._lock:
            return self._alive

    def busy(self, since: float | None = None, stale_s: float = 2.0) -> bool | None:
        """Whether a page is loading or has requests in flight; ``None`` when there is no signal (pipe closed,
        no page attached yet). Loads and requests that started more than ``stale_s`` before ``since``
        (monotonic time, e.g. when a wait began) are background activity (long polls) and are ignored."""
        now = time.monotonic()
        cutoff = (since if since is not None else now) - stale_s
        # A requested navigation that never starts loading (cancelled, a download) stops counting soon.
        requested_cutoff = max(cutoff, now - REQUESTED_NAVIGATION_TTL_S)
        with self._lock:
            if not self._alive or not self._pages:
                return None
            return any(t >= cutoff for p in self._pages.values() for t in (*p.loading.values(),
                                                                            *p.requests.values())) or any(
                t >= requested_cutoff for p in self._pages.values() for t in p.requested.values())

    def fence(self, timeout_s: float = 0.3) -> Fence:
        """Ask every page for its visible images decoded, then a double ``requestAnimationFrame``; hidden pages
        answer at once."""
        with self._lock:
            baselines = {session: page.inputs for session, page in self._pages.items()}
        futures = {session: self._evaluate_count(_FENCE_JS, session) for session in baselines}
        return Fence(futures, baselines, timeout_s)

    def _evaluate_count(self, expression: str, session: str) -> Future[dict[str, Any]]:
        """Evaluate ``expression`` (an input count) in the page; its answer becomes the page's baseline."""
        future = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session)

        def remember(done: Future[dict[str, Any]]) -> None:
            count = _count(done)
            with self._lock:
                page = self._pages.get(session)
                if count is not None and page is not None:
                    page.inputs = count
        future.add_done_callback(remember)
        return future

    def version(self) -> int:
        """Grows whenever something arrived from the browser (pass it to ``wait_change``)."""
        with self._lock:
            return self._version

    def wait_change(self, version: int, timeout_s: float) -> None:
        """Sleep up to ``timeout_s``, less if anything arrived since ``version`` was read: a waiter sees the
        end of a load (or a fence's answer) at once rather than at its next poll."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != version, timeout_s)

    def wait_attached(self, timeout_s: float) -> bool:
        return self.attached.wait(timeout_s)

    def sessions(self) -> list[str]:
        """DevTools session ids of the attached pages."""
        with self._lock:
            return list(self._pages)

    # --- the protocol -------------------------------------------------------------------------------

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> Future[dict[str, Any]]:
        """Send one command; the future gets its ``result`` (or an exception for an error or a closed pipe)."""
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            if not self._alive:
                future.set_exception(ConnectionError("browser pipe closed"))
                return future
            self._next_id += 1
            msg_id = self._next_id
            self._pending[msg_id] = future
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        try:
            with self._write_lock:
                if self._write_closed:
                    raise OSError("browser pipe closed")
                view = memoryview(data)
                while view:
                    view = view[os.write(self._write_fd, view):]
        except OSError as exc:
            self._fail(f"write failed: {exc}")
        return future

    def _read_loop(self) -> None:
        buf = b""
        try:
            while True:
                chunk = os.read(self._read_fd, 1 << 16)
                if not chunk:
                    break
                buf += chunk
                *messages, buf = buf.split(b"\0")
                for raw in messages:
                    try:
                        self._handle(json.loads(raw))
                    except (ValueError, KeyError, TypeError, AttributeError):
                        log.warning("unexpected DevTools message: %.200r", raw)
                self._bump()
        except OSError as exc:
            log.debug("browser pipe read ended: %s", exc)
        finally:
            with contextlib.suppress(OSError):
                os.close(self._read_fd)
        self._fail("browser pipe closed")

    def _handle(self, msg: dict[str, Any]) -> None:
        if "id" in msg:
            with self._lock:
                future = self._pending.pop(int(msg["id"]), None)
            if future is not None and not future.done():
                if "error" in msg:
                    future.set_exception(RuntimeError(str(msg["error"].get("message", msg["error"]))))
                else:
                    future.set_result(msg.get("result", {}))
            return
        method, params, session = msg.get("method", ""), msg.get("params", {}), msg.get("sessionId")
        now = time.monotonic()
        if method == "Target.targetCreated":
            info = params["targetInfo"]
            if info.get("type") == "page" and not info.get("attached"):
                self.send("Target.attachToTarget", {"targetId": info["targetId"], "flatten": True})
        elif method == "Target.attachedToTarget":
            if params["targetInfo"].get("type") == "page":
                self._attached(params["sessionId"])
        elif method == "Target.detachedFromTarget":
            with self._lock:
                self._pages.pop(params["sessionId"], None)
        elif session is not None:
            self._page_event(method, params, session, now)

    def _attached(self, session: str) -> None:
        with self._lock:
            self._pages.setdefault(session, _Page())
        for method, params in (("Page.enable", {}), ("Page.setLifecycleEventsEnabled", {"enabled": True}),
                               ("Network.enable", {}),
                               ("Page.addScriptToEvaluateOnNewDocument", {"source": _INPUT_JS})):
            self.send(method, params, session)
        self._evaluate_count(_INPUT_JS, session).add_done_callback(lambda _: self.attached.set())

    def _page_event(self, method: str, params: dict[str, Any], session: str, now: float) -> None:
        with self._lock:
            page = self._pages.get(session)
            if page is None:
                return
            if method in ("Page.frameRequestedNavigation", "Page.frameScheduledNavigation"):
                page.requested.setdefault(params["frameId"], now)
            elif method == "Page.frameStartedLoading":
                page.loading[params["frameId"]] = now
                page.requested.pop(params["frameId"], None)
            elif method in ("Page.frameStoppedLoading", "Page.frameDetached"):
                page.loading.pop(params["frameId"], None)
                page.requested.pop(params["frameId"], None)
            elif method == "Page.navigatedWithinDocument":
                page.requested.pop(params["frameId"], None)
            elif method == "Page.frameNavigated":
                page.requested.pop(params["frame"]["id"], None)
            elif method == "Network.requestWillBeSent":
                if params.get("type") not in IGNORED_TYPES:
                    page.requests.setdefault(params["requestId"], now)  # a redirect keeps its first time
            elif method in ("Network.loadingFinished", "Network.loadingFailed",
                            "Network.requestServedFromMemoryCache"):
                page.requests.pop(params["requestId"], None)

    def _fail(self, reason: str) -> None:
        with self._lock:
            was_alive, self._alive = self._alive, False
            pending, self._pending = self._pending, {}
            self._pages.clear()
        if was_alive:
            log.info("browser signal lost: %s", reason)
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionError(reason))
        self._bump()

    def _bump(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def close(self) -> None:
        """Stop using the pipes; close our write end (Chromium sees EOF on its fd 3). The reader ends, and
        closes the read end, once Chromium's side is closed too (it exits or is killed)."""
        self._fail("closed")
        with self._write_lock:
            if not self._write_closed:
                self._write_closed = True
                with contextlib.suppress(OSError):
                    os.close(self._write_fd)
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=2)


def pipe_command(args: list[str]) -> tuple[list[str], tuple[int, int], BrowserSignal]:
    """Chromium's ``args`` (which include ``--remote-debugging-pipe``) rewritten to get the pipe on fds 3 and 4.

    Returns ``(command, child_fds, signal)``: spawn ``command`` with ``pass_fds=child_fds``, then close
    ``child_fds`` in this process. ``subprocess`` cannot place an fd at a chosen number, so a ``bash -c 'exec'``
    moves them there (bash, unlike dash, takes fd numbers above 9); the exec keeps the pid, so the process
    started is Chromium itself.
    """
    child_in, ours_w = os.pipe()  # commands: we write, Chromium reads its fd 3
    ours_r, child_out = os.pipe()  # replies/events: Chromium writes its fd 4, we read
    script = f'exec "$@" {CHILD_IN_FD}<&{child_in} {CHILD_OUT_FD}>&{child_out} {child_in}<&- {child_out}>&-'
    command = ["/bin/bash", "-c", script, "chromium", *args]
    return command, (child_in, child_out), BrowserSignal(ours_r, ours_w)


# --- the signal of each display's browser, for the screenshotter on that display --------------------------

_registry: dict[str, BrowserSignal] = {}
_registry_lock = threading.Lock()


def register(display: str, signal: BrowserSignal | None) -> None:
    """Make ``signal`` the one for ``display`` (``None`` removes it); closes the one it replaces."""
    with _registry_lock:
        old = _registry.pop(display, None)
        if signal is not None:
            _registry[display] = signal
    if old is not None and old is not signal:
        old.close()


def unregister(display: str, signal: BrowserSignal) -> None:
    """Close ``signal``; remove it for ``display`` if it is still the registered one."""
    with _registry_lock:
        if _registry.get(display) is signal:
            del _registry[display]
    signal.close()


def for_display(display: str) -> BrowserSignal | None:
    with _registry_lock:
        return _registry.get(display)

