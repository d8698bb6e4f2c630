"""The desktop daemon: one process per desktop, serving its tools, frames and VNC over HTTP.

It starts the ``Desktop`` itself, restarts the browser / window manager / VNC server when they die (with
backoff), and reports the desktop lost when Xvfb dies. All X11 work (the computer tool, frame grabs) runs on
one dedicated thread with its own event loop: python-xlib connections are not thread-safe, and the tools
are ``async``, so a single-thread executor running coroutines is the simplest correct home for them.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from deskpilot.cli import cli_settings
from deskpilot.errors import DeskpilotError, DesktopLostError
from deskpilot.settings import Settings
from desktop import browser_query
from desktop.display import Desktop
from desktop.egress_relay import EgressRelay
from desktop.sandbox import Sandbox, become_owner_of, make_non_dumpable
from desktop.tool_host import ToolHost
from desktop.vnc_bridge import bridge

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BODY_BYTES = 8 << 20  # an editor `create` of a large file fits; nothing legitimate is bigger
SUPERVISE_INTERVAL_S = 0.25
BACKOFF_FIRST_S, BACKOFF_MAX_S, BACKOFF_RESET_S = 0.5, 30.0, 60.0


class XThread:
    """One thread, one event loop: every X11 connection is created and used here only."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="x11", daemon=True)
        self._thread.start()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()


class Supervisor:
    """Restarts dead restartable components with exponential backoff; notices a dead Xvfb."""

    def __init__(self, desktop: Desktop) -> None:
        self.desktop = desktop
        self.lost: str | None = None
        self.restarts: dict[str, int] = {}
        self._backoff: dict[str, float] = {}
        self._next_try: dict[str, float] = {}
        self._started_at: dict[str, float] = {}

    def check_lost(self) -> str | None:
        if self.lost is None and not self.desktop.alive():
            self.lost = "desktop lost: Xvfb exited"
            log.error("%s (%s)", self.lost, self.desktop.components().get("xvfb"))
        return self.lost

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.check_lost() is None:
            now = loop.time()
            for name, status in self.desktop.components().items():
                if name == "xvfb" or status in ("running", "restarting"):
                    if status == "running" and now - self._started_at.get(name, now) > BACKOFF_RESET_S:
                        self._backoff.pop(name, None)
                    continue
                if now < self._next_try.get(name, 0.0):
                    continue
                delay = self._backoff.get(name, BACKOFF_FIRST_S)
                self._backoff[name] = min(delay * 2, BACKOFF_MAX_S)
                self._next_try[name] = now + delay
                log.warning("desktop component %s %s; restarting", name, status)
                try:
                    await asyncio.to_thread(self.desktop.restart, name)
                except DeskpilotError as exc:
                    log.error("restart of %s failed: %s", name, exc)
                    continue
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self._started_at[name] = loop.time()
            await asyncio.sleep(SUPERVISE_INTERVAL_S)


class BearerAuth:
    """Every route but ``/healthz`` needs ``Authorization: Bearer <token>``; WebSockets are refused (1008)
    before ``accept()``. Constant-time comparison."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] == "/healthz":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self._expected):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})
        else:
            response = error_response(401, "unauthorized")
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)


def error_response(status: int, error: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": error, "status": status}, status_code=status)


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The body, or None when it exceeds ``limit`` (checked while streaming, not after)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(desktop: Desktop, token: str, sandbox: Sandbox, settings: Settings, *,
               parent_pid: int | None = None) -> ASGIApp:
    """The daemon's ASGI app for an already started ``desktop``, whose tools run as ``sandbox``.

    With ``parent_pid`` the daemon shuts down (and stops its desktop) once that process is gone, so a
    crashed service never leaves desktops behind.
    """
    supervisor = Supervisor(desktop)
    xthread = XThread()
    host = ToolHost(desktop.display, xthread.run, sandbox, settings)

    def lost() -> str | None:
        return supervisor.check_lost()

    async def healthz(request: Request) -> Response:
        reason = lost()
        return error_response(503, reason) if reason else JSONResponse({"ok": True})

    async def info(request: Request) -> Response:
        if reason := lost():
            return error_response(503, reason)
        return JSONResponse({
            "display": desktop.display,
            "screen": {"width": desktop.width, "height": desktop.height},
            "model_screen": dict(zip(("width", "height"), host.model_size(desktop.width, desktop.height),
                                     strict=True)),
            "os": os_name(), "browser": await asyncio.to_thread(browser_version, desktop.browser_binary),
            "components": desktop.components(), "restarts": supervisor.restarts,
            "pids": {name: desktop.pid(name) for name in desktop.components()},
        })

    async def tool(request: Request) -> Response:
        if reason := lost():
            return error_response(503, reason)
        name = request.path_params["name"]
        if not host.knows(name):
            return error_response(404, f"unknown tool: {name}")
        body = await read_body(request)
        if body is None:
            return error_response(413, f"request body over {MAX_BODY_BYTES} bytes")
        parsed = host.parse_call(body)
        if isinstance(parsed, str):
            return error_response(400, parsed)
        tool_input, version = parsed
        result = await host.call(name, tool_input, version)
        if reason := lost():  # the desktop died under the call: say so rather than blame the tool
            return error_response(503, reason)
        return JSONResponse(result.to_json())

    async def frame(request: Request) -> Response:
        if reason := lost():
            return error_response(503, reason)
        try:
            quality = min(95, max(10, int(request.query_params.get("quality", "60"))))
            max_width = max(64, int(request.query_params.get("max_width", "1024")))
        except ValueError:
            return error_response(400, "quality and max_width must be integers")
        try:
            etag, jpeg = await host.frame(quality, max_width, request.headers.get("if-none-match"))
        except DesktopLostError as exc:
            return error_response(503, lost() or exc.message)
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if jpeg is None:
            return Response(status_code=304, headers=headers)
        return Response(jpeg, media_type="image/jpeg", headers=headers)

    async def window(request: Request) -> Response:
        if reason := lost():
            return error_response(503, reason)
        try:
            active = await host.active_window()
        except DesktopLostError as exc:
            return error_response(503, lost() or exc.message)
        return JSONResponse(active.to_json())

    async def vnc(websocket: WebSocket) -> None:
        sock = desktop.vnc_socket
        if lost() or sock is None:
            await websocket.close(code=1011, reason=lost() or "this desktop has no VNC server")
            return
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol="binary" if "binary" in offered else None)
        await bridge(websocket, sock, view_only=websocket.query_params.get("view_only") in ("1", "true"))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(supervisor.run(), name="supervisor"),
                 asyncio.create_task(host.warm_up(), name="warm-up"),
                 asyncio.create_task(asyncio.to_thread(browser_version, desktop.browser_binary))]
        if parent_pid is not None:
            tasks.append(asyncio.create_task(exit_with_parent(parent_pid), name="parent-watch"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await host.close()
            xthread.close()

    app = Starlette(routes=[
        Route("/healthz", healthz), Route("/info", info), Route("/tools/{name}", tool, methods=["POST"]),
        Route("/frame", frame), Route("/window", window), WebSocketRoute("/vnc", vnc),
        *browser_query.routes(desktop),  # evaluation's reads of the browser (desktop/browser_query.py)
    ], lifespan=lifespan)
    return BearerAuth(app, token)


async def exit_with_parent(parent_pid: int) -> None:
    """Wait on a pidfd of the parent (readable once it exits), then shut down."""
    if os.getppid() == parent_pid:  # not yet reparented, so the pid is still the parent's
        try:
            fd = os.pidfd_open(parent_pid)
        except ProcessLookupError:
            fd = -1
        if fd >= 0:
            gone = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_reader(fd, gone.set)
            try:
                await gone.wait()
            finally:
                loop.remove_reader(fd)
                os.close(fd)
    log.warning("parent process %d is gone; shutting down", parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's own graceful shutdown, then the desktop stops


def os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


_browser_versions: dict[str, str] = {}


def browser_version(binary: str) -> str:
    if binary not in _browser_versions:
        try:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=15).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        _browser_versions[binary] = out.strip() or Path(binary).name
    return _browser_versions[binary]


def read_token(token_file: str | None, settings: Settings) -> str:
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise click.ClickException(f"cannot read the token file {token_file}: {exc.strerror}") from exc
    else:
        secret = settings.desktop_token
        token = secret.get_secret_value().strip() if secret is not None else ""
    if not token:
        raise click.ClickException("no token: set DESKPILOT_DESKTOP_TOKEN or pass --token-file")
    if len(token) < 16:
        raise click.ClickException("the desktop token must be at least 16 characters")
    return token


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through Desktop.start(), which then stops what it started


@click.command("desktopd")
@click.option("--width", type=click.IntRange(320, 8192), default=None,
              help="Screen width (default: DESKPILOT_SCREEN_WIDTH).")
@click.option("--height", type=click.IntRange(240, 8192), default=None,
              help="Screen height (default: DESKPILOT_SCREEN_HEIGHT).")
@click.option("--uds", type=click.Path(dir_okay=False), default=None, help="Serve on this unix socket.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address for --port.")
@click.option("--port", type=int, default=None, help="Serve on this loopback TCP port.")
@click.option("--private-network", is_flag=True,
              help="Allow a non-loopback --host: only inside a container on a private, encrypted network "
                   "(the swarm backend's overlay), where the bearer token is what guards the daemon.")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the bearer token (else DESKPILOT_DESKTOP_TOKEN).")
@click.option("--start-url", default=None, help="The browser's first page (default: DESKPILOT_BROWSER_START_URL).")
@click.option("--kiosk/--no-kiosk", default=False, show_default=True, help="Browser without its own UI.")
@click.option("--browser/--no-browser", default=True, show_default=True, help="Start a browser at all.")
@click.option("--exit-with-parent", is_flag=True, help="Shut down when the process that started this one exits.")
@click.option("--xauth-file", type=click.Path(dir_okay=False), default=None,
              help="Write the X server's cookie here (default: a private temp dir); removed at exit.")
@click.option("--as-owner-of", type=click.Path(exists=True, file_okay=False, readable=False, path_type=Path),
              default=None,
              help="When root: become this directory's owner, keeping only CAP_SETUID/CAP_SETGID (the container).")
@click.option("--proxy", default=None, metavar="HOST:PORT",
              help="The desktop's egress proxy: the browser and the model's shell go through it (docs/security.md).")
@click.option("--proxy-uds", type=click.Path(dir_okay=False), default=None,
              help="The egress proxy as a unix socket (a desktop without a network): relayed to a loopback port.")
@click.option("--shell-network", type=click.Choice(["proxy", "none"]), default=None,
              help="The model's shell through the egress proxy, or with no network (default: DESKPILOT_EGRESS_SHELL).")
@click.option("--sandbox", "sandbox_mode", type=click.Choice(["uid", "off"]), default=None,
              help="Who runs the model's programs (default: DESKPILOT_DESKTOP_SANDBOX; docs/security.md).")
def desktopd_command(width: int | None, height: int | None, uds: str | None, host: str, port: int | None,
                     private_network: bool, token_file: str | None, start_url: str | None, kiosk: bool,
                     browser: bool, exit_with_parent: bool, xauth_file: str | None, as_owner_of: Path | None,
                     proxy: str | None, proxy_uds: str | None, shell_network: str | None,
                     sandbox_mode: str | None) -> None:
    """Start a desktop and serve its tools (the desktop daemon)."""
    import uvicorn

    # Before anything secret is in memory: no same-uid process may read it through /proc or ptrace.
    make_non_dumpable()
    if as_owner_of is not None:
        become_owner_of(as_owner_of)
    settings = cli_settings()  # read once by the deskpilot command, passed down from here
    token = read_token(token_file, settings)
    if (uds is None) == (port is None):
        raise click.UsageError("give exactly one of --uds PATH or --port N")
    if uds is None and host not in ("127.0.0.1", "::1", "localhost") and not private_network:
        raise click.UsageError("the daemon only listens on loopback (or, with --private-network, inside a "
                               "container on a private network); use --uds for anything else")
    parent_pid = os.getppid() if exit_with_parent else None
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    # Only holders of this cookie reach the X server: the daemon, its desktop's programs (they inherit
    # XAUTHORITY) and whoever can read the file — not every local user, as with a cookie-less Xvfb.
    if xauth_file:
        xauth_dir, xauthority = None, Path(xauth_file)
    else:
        xauth_dir = Path(tempfile.mkdtemp(prefix="deskpilot-xauth-"))
        xauthority = xauth_dir / "Xauthority"
    os.environ["XAUTHORITY"] = str(xauthority)
    try:
        sandbox = Sandbox.create(sandbox_mode or settings.desktop_sandbox)
        relay = EgressRelay(proxy_uds).start() if proxy_uds else None
        sandbox.proxy = relay.address if relay is not None else proxy
        sandbox.shell_network = shell_network or settings.egress_shell
    except DeskpilotError as exc:
        raise click.ClickException(str(exc)) from exc
    desktop = Desktop(width, height, start_url=start_url, kiosk=kiosk, browser=browser, xauthority=xauthority,
                      sandbox=sandbox, settings=settings)
    try:
        try:
            desktop.start()
        except DeskpilotError as exc:
            raise click.ClickException(str(exc)) from exc
        if uds:
            Path(uds).unlink(missing_ok=True)
        app = create_app(desktop, token, sandbox, settings, parent_pid=parent_pid)
        config = uvicorn.Config(app, uds=uds, host=host, port=port or 0,
                                log_config=None, access_log=False, timeout_graceful_shutdown=3,
                                ws="websockets-sansio", ws_max_size=MAX_BODY_BYTES)
        server = uvicorn.Server(config)
        log.info("desktop daemon serving %s on %s", desktop.display, uds or f"{host}:{port}")
        asyncio.run(server.serve())
    finally:
        desktop.stop()
        sandbox.close()
        if relay is not None:
            relay.stop()
        if uds:
            Path(uds).unlink(missing_ok=True)
        xauthority.unlink(missing_ok=True)
        if xauth_dir is not None:
            shutil.rmtree(xauth_dir, ignore_errors=True)
    sys.exit(0)

