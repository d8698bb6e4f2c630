"""Docker desktop backend: one hardened container per session, with a warm pool.

Each desktop is a container of the desktop image (``Dockerfile`` target ``desktop``) running
``deskpilot desktopd`` on a unix socket in a private host directory bind-mounted at ``/run/deskpilot``,
so no port is ever published. The daemon's token is a file in that directory, never an environment
variable (``docker inspect`` shows the environment), and the model key never enters the container.

Hardening: every capability dropped but the three the daemon needs to run the model's programs as a separate
uid (SETUID, SETGID, KILL); the container starts as root only so that ``deskpilot desktopd --as-owner-of``
can become the run directory's owner (our uid, or the image's user when we are root) keeping just those;
the model's shell, editor and browser run as a per-desktop sandbox uid with no capabilities, which cannot
enter ``/run/deskpilot`` (docs/security.md). ``no-new-privileges``, pids/memory/CPU limits,
read-only root with tmpfs for ``/tmp`` and the home directory. The network is a setting: ``none`` by
default, so the desktop's only way out is its session's egress proxy, a unix socket in its run directory
(``desktop/egress_proxy.py``, relayed inside by the daemon); ``bridge`` gives it a route that programs
ignoring the proxy can use; ``host`` only for tests, since it exposes every loopback service to the desktop.

Containers carry the labels ``deskpilot.managed=1`` and ``deskpilot.instance`` (which run directory
they belong to), so a restarted service removes its orphans before it starts new desktops.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx

from deskpilot.errors import ConfigError, DeskpilotError, DesktopLostError, DesktopStartError
from deskpilot.settings import Settings
from desktop.backends.base import DesktopHandle
from desktop.backends.container import (
    CONTAINER_RUN_DIR,
    DAEMON_CAPS,
    EGRESS_SOCKET,
    IMAGE_UID,
    LABEL_DESKTOP,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_SESSION,
    container_args,
)
from desktop.client import DesktopClient
from desktop.egress_proxy import EgressProxy, start_proxy

log = logging.getLogger(__name__)

# Re-exported: tests and tools name them through the Docker backend.
__all__ = ["CONTAINER_RUN_DIR", "DAEMON_CAPS", "LABEL_DESKTOP", "LABEL_INSTANCE", "LABEL_MANAGED", "LABEL_SESSION",
           "DockerBackend", "instance_id", "run_root_of"]

_POLL_S = 0.05
_MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes, including the terminating NUL


def instance_id(run_root: Path) -> str:
    """The label value naming which service (by its run directory) owns a container."""
    return hashlib.sha256(str(run_root.resolve()).encode()).hexdigest()[:12]


def run_root_of(settings: Settings) -> Path:
    return (settings.docker_run_dir or settings.data_dir / "desktops").resolve()


class ContainerClient(DesktopClient):
    """A ``DesktopClient`` that, when the daemon is unreachable, says what happened to its container."""

    def __init__(self, *, uds: str, token: str, container: Any, timeout_s: float) -> None:
        super().__init__(uds=uds, token=token, timeout_s=timeout_s)
        self._container = container

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await super()._request(method, path, **kwargs)
        except DesktopLostError as exc:
            # Unreachable (not a 503 from a live daemon): the container may be on its way out.
            settle_s = 3.0 if isinstance(exc.__cause__, httpx.TransportError) else 0.0
            reason = await asyncio.to_thread(_container_fate, self._container, settle_s)
            raise DesktopLostError(f"desktop lost: {reason} ({exc.message})") from exc


def _container_fate(container: Any, settle_s: float = 3.0) -> str:
    """Why a desktop's daemon stopped answering, from its container's state. A killed container can
    still read as running for a moment, so a running one is asked again for up to ``settle_s``."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            container.reload()
        except docker.errors.NotFound:
            return f"container {container.short_id} was removed"
        except docker.errors.DockerException as exc:
            return f"container {container.short_id} cannot be inspected: {exc}"
        state = container.attrs.get("State", {})
        if state.get("OOMKilled"):
            return f"container {container.short_id} ran out of memory"
        if container.status != "running":
            return f"container {container.short_id} {container.status} (exit code {state.get('ExitCode')})"
        if time.monotonic() > deadline:
            return f"container {container.short_id} is running but its desktop is gone"
        time.sleep(0.1)


@dataclass
class _Desktop:
    key: str
    container_id: str
    run_dir: Path
    client: DesktopClient
    width: int
    height: int
    session_id: str = ""
    egress: EgressProxy | None = None


class DockerBackend:
    """``DesktopBackend`` on a Docker engine (``DOCKER_HOST`` or the local socket)."""

    def __init__(self, settings: Settings, *, start_url: str | None = None, kiosk: bool = False,
                 engine: Any = None) -> None:
        self.settings = settings
        self.start_url = start_url if start_url is not None else self.settings.browser_start_url
        self.kiosk = kiosk
        self.run_root = run_root_of(self.settings)
        self.instance = instance_id(self.run_root)
        self._engine = engine
        self._started = False
        self._start_lock = asyncio.Lock()
        self._pool: list[_Desktop] = []
        self._filling: asyncio.Task[None] | None = None
        self._live: dict[str, _Desktop] = {}
        self._closed = False

    # --- DesktopBackend -------------------------------------------------------------------------------

    async def acquire(self, session_id: str, width: int, height: int) -> DesktopHandle:
        await self.start()
        desktop = await self._take_warm(width, height)
        if desktop is None:
            desktop = await self._start_desktop(width, height, session_id)
        else:
            # Labels cannot change after creation: the name tells operators which session a pooled desktop serves.
            await asyncio.to_thread(self._rename, desktop, session_id)
        desktop.session_id = session_id
        self._live[desktop.key] = desktop
        self._refill()
        log.info("desktop %s (container %s) serves session %s", desktop.key, desktop.container_id[:12], session_id)
        return DesktopHandle(id=desktop.key, client=desktop.client, vnc_available=True, session_id=session_id,
                             egress=desktop.egress, extra={"container": desktop.container_id})

    async def release(self, handle: DesktopHandle) -> None:
        desktop = self._live.pop(handle.id, None)
        if desktop is not None:
            await self._destroy(desktop)

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Remove this instance's orphans from an earlier run, then start filling the warm pool."""
        async with self._start_lock:
            if self._started:
                return
            sock = self.run_root / ("x" * 12) / "daemon.sock"
            if len(str(sock).encode()) > _MAX_SOCKET_PATH:
                raise ConfigError(f"the desktop socket path {sock} is too long for a unix socket; set "
                                  "DESKPILOT_DOCKER_RUN_DIR to a shorter directory")
            self.run_root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.run_root, 0o700)
            removed = await asyncio.to_thread(self._remove_orphans)
            if removed:
                log.info("removed %d orphaned desktop container(s)", removed)
            self._started = True
            # A service that stops without aclose() must not leave desktops running behind it.
            atexit.register(self._remove_all_now)
        self._refill()

    async def aclose(self) -> None:
        """Remove the warm pool and every desktop still in use."""
        self._closed = True
        atexit.unregister(self._remove_all_now)
        if self._filling is not None:
            self._filling.cancel()
            with contextlib.suppress(BaseException):
                await self._filling
        for desktop in [*self._pool, *self._live.values()]:
            await self._destroy(desktop)
        self._pool.clear()
        self._live.clear()

    def _remove_all_now(self) -> None:
        """Synchronous last resort at interpreter exit: remove every container this backend started."""
        ids = [d.container_id for d in [*self._pool, *self._live.values()]]
        self._pool.clear()
        self._live.clear()
        for cid in ids:
            with contextlib.suppress(Exception):
                self.engine().containers.get(cid).remove(force=True)

    async def wait_pool_ready(self, within_s: float = 120.0) -> None:
        """Wait until the warm pool is full (tests and benchmarks)."""
        await self.start()
        deadline = time.monotonic() + within_s
        while len(self._pool) < self.settings.docker_warm_pool:
            if time.monotonic() > deadline:
                raise DesktopStartError("the warm pool did not fill in time")
            if self._filling is None or self._filling.done():
                self._refill()
            await asyncio.sleep(_POLL_S)

    def pool_ids(self) -> list[str]:
        """Container ids of the warm pool, oldest first (tests and benchmarks)."""
        return [desktop.container_id for desktop in self._pool]

    # --- warm pool ------------------------------------------------------------------------------------

    async def _take_warm(self, width: int, height: int) -> _Desktop | None:
        while self._pool:
            desktop = self._pool.pop(0)
            if (desktop.width, desktop.height) != (width, height):
                self._pool.append(desktop)
                return None
            if await desktop.client.healthz():
                return desktop
            log.warning("warm desktop %s died while idle; discarding it", desktop.key)
            await self._destroy(desktop)
        return None

    def _refill(self) -> None:
        if self._closed or (self._filling is not None and not self._filling.done()):
            return
        if len(self._pool) < self.settings.docker_warm_pool:
            self._filling = asyncio.get_running_loop().create_task(self._fill())

    async def _fill(self) -> None:
        while not self._closed and len(self._pool) < self.settings.docker_warm_pool:
            try:
                desktop = await self._start_desktop(self.settings.screen_width, self.settings.screen_height, "")
            except DeskpilotError as exc:  # the next acquire tries again; sessions still get cold desktops
                log.error("warm pool: %s", exc.message)
                return
            try:
                # One screenshot now loads the computer tool and its X connection, so the session's first
                # screenshot costs what any later one does.
                await desktop.client.screenshot()
            except DeskpilotError as exc:
                log.error("warm pool: a new desktop failed its first screenshot: %s", exc.message)
                await self._destroy(desktop)
                return
            if self._closed:
                await self._destroy(desktop)
                return
            self._pool.append(desktop)

    # --- containers -----------------------------------------------------------------------------------

    def engine(self) -> Any:
        if self._engine is None:
            try:
                self._engine = docker.from_env()
                self._engine.ping()
            except docker.errors.DockerException as exc:
                self._engine = None
                raise ConfigError(f"the docker backend cannot reach a Docker engine: {exc}") from exc
        return self._engine

    def _name(self, key: str, session_id: str = "") -> str:
        tail = re.sub(r"[^a-zA-Z0-9_.-]", "_", session_id)[:64]
        return f"deskpilot-{self.instance[:6]}-{key}" + (f"-s-{tail}" if tail else "")

    def _rename(self, desktop: _Desktop, session_id: str) -> None:
        with contextlib.suppress(docker.errors.DockerException):
            self.engine().containers.get(desktop.container_id).rename(self._name(desktop.key, session_id))

    def _remove_orphans(self) -> int:
        engine = self.engine()
        found = engine.containers.list(
            all=True, filters={"label": [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={self.instance}"]})
        for container in found:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        # Nothing of ours runs now, so every desktop directory left (named by its 12-hex key) is stale.
        for path in self.run_root.iterdir():
            if path.is_dir() and re.fullmatch(r"[0-9a-f]{12}", path.name):
                shutil.rmtree(path, ignore_errors=True)
        return len(found)

    def _user(self) -> tuple[int, int]:
        # The socket the daemon creates must be reachable by this process: the daemon becomes the owner of the
        # run directory, which is our own uid, or the image's user when we are root (root reaches any socket).
        uid, gid = os.getuid(), os.getgid()
        return (IMAGE_UID, IMAGE_UID) if uid == 0 else (uid, gid)

    def _prepare_dir(self, key: str) -> tuple[Path, str]:
        run_dir = self.run_root / key
        run_dir.mkdir(mode=0o700)
        token = secrets.token_urlsafe(32)
        token_file = run_dir / "token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        uid, gid = self._user()
        if os.getuid() == 0:
            os.chown(run_dir, uid, gid)
            os.chown(token_file, uid, gid)
        return run_dir, token

    def _container_args(self, key: str, run_dir: Path, width: int, height: int, session_id: str) -> dict[str, Any]:
        return container_args(self.settings, instance=self.instance, name=self._name(key, session_id), key=key,
                              run_dir=run_dir, width=width, height=height, session_id=session_id,
                              start_url=self.start_url, kiosk=self.kiosk)

    async def _start_desktop(self, width: int, height: int, session_id: str) -> _Desktop:
        key = secrets.token_hex(6)
        run_dir, token = await asyncio.to_thread(self._prepare_dir, key)
        args = self._container_args(key, run_dir, width, height, session_id)
        egress = await self._start_egress(run_dir)
        try:
            container = await asyncio.to_thread(self.engine().containers.run, **args)
        except docker.errors.ImageNotFound as exc:
            await egress.aclose()
            shutil.rmtree(run_dir, ignore_errors=True)
            raise ConfigError(f"desktop image {self.settings.docker_image!r} not found: build it with "
                              "`docker build --target desktop -t deskpilot-desktop .`") from exc
        except docker.errors.DockerException as exc:
            await egress.aclose()
            shutil.rmtree(run_dir, ignore_errors=True)
            raise DesktopStartError(f"could not start a desktop container: {exc}") from exc
        client = ContainerClient(uds=str(run_dir / "daemon.sock"), token=token, container=container,
                                 timeout_s=self.settings.bash_timeout_s + 30)  # a bash call may take all of it
        desktop = _Desktop(key, container.id, run_dir, client, width, height, session_id, egress)
        try:
            await self._wait_ready(desktop, container)
        except BaseException:
            await asyncio.shield(self._destroy(desktop))
            raise
        return desktop

    async def _wait_ready(self, desktop: _Desktop, container: Any) -> None:
        deadline = time.monotonic() + self.settings.desktop_start_timeout_s
        sock = desktop.run_dir / "daemon.sock"
        while True:
            if sock.exists() and await desktop.client.healthz():
                return
            await asyncio.to_thread(container.reload)
            if container.status in ("exited", "dead"):
                logs = await asyncio.to_thread(container.logs, tail=30)
                raise DesktopStartError(f"desktop container exited during start-up: "
                                        f"{logs.decode(errors='replace').strip()[-1500:]}")
            if time.monotonic() > deadline:
                raise DesktopStartError("desktop container did not become healthy in time")
            await asyncio.sleep(_POLL_S)

    async def _start_egress(self, run_dir: Path) -> EgressProxy:
        """The desktop's egress proxy on a socket in its run directory, for the daemon alone (0600, its uid)."""
        path = run_dir / EGRESS_SOCKET
        proxy = await start_proxy(self.settings, listen_uds=str(path)).start()
        uid, gid = self._user()
        try:
            await asyncio.to_thread(os.chmod, path, 0o600)
            if os.getuid() == 0:
                await asyncio.to_thread(os.chown, path, uid, gid)
        except OSError:
            await proxy.aclose()
            raise
        return proxy

    async def _destroy(self, desktop: _Desktop) -> None:
        with contextlib.suppress(Exception):
            await desktop.client.aclose()
        if desktop.egress is not None:
            await desktop.egress.aclose()

        def remove() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self.engine().containers.get(desktop.container_id).remove(force=True)
            shutil.rmtree(desktop.run_dir, ignore_errors=True)

        await asyncio.to_thread(remove)
