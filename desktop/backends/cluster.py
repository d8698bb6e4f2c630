"""The engine-neutral half of the cluster desktop backends (Docker Swarm, Kubernetes).

A cluster desktop is the Docker backend's container (one definition of its hardening: ``container_args``)
started by an orchestrator on some node, its daemon serving authenticated TCP on ``DAEMON_PORT`` on a network
only the service reaches, its per-desktop bearer token handed over as the engine's secret object (a file,
never an environment variable). This module holds what does not depend on the engine: naming and labels (so a
restarted service removes its orphans by label), tokens, the warm pool, the readiness wait over the daemon's
TCP endpoint, release and shutdown. An engine (``ClusterEngine``) only creates, locates and removes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from deskpilot.errors import DeskpilotError, DesktopLostError, DesktopStartError
from deskpilot.settings import Settings
from desktop.backends.base import DesktopHandle
from desktop.backends.container import LABEL_DESKTOP, LABEL_INSTANCE, LABEL_MANAGED
from desktop.client import DesktopClient
from desktop.egress_proxy import EgressProxy, start_proxy

log = logging.getLogger(__name__)

DAEMON_PORT = 7000
LABEL_BACKEND = "deskpilot.backend"
_POLL_S = 0.2


def base_labels(instance: str, backend: str) -> dict[str, str]:
    """The labels of everything a backend instance creates: what a restarted instance removes as orphans."""
    return {LABEL_MANAGED: "1", LABEL_INSTANCE: instance, LABEL_BACKEND: backend}


@dataclass
class DesktopSpec:
    """One desktop to start, as the engine-neutral part decided it."""

    key: str  # 12 hex digits, unique per desktop
    name: str  # deskpilot-<instance[:6]>-<key>: a valid Swarm service and Kubernetes object name
    labels: dict[str, str]  # on every object the engine creates for this desktop (orphan clean-up)
    token: str  # the daemon's bearer token
    width: int
    height: int
    session_id: str  # "" for a warm-pool desktop
    proxy: str | None = None  # host:port of its egress proxy, when the engine gives desktops one


@dataclass(frozen=True)
class ProxyListen:
    """Where desktops' egress proxies listen in this process: an address of it their network reaches, and a
    port range (the one the network policies open from desktops to the service)."""

    host: str
    ports: range


@dataclass
class Placement:
    """What an engine started: its own reference, and the token the daemon really uses (an engine whose
    desktops are started before they are claimed, as agent-sandbox's warm pool, has its own)."""

    ref: Any
    token: str
    extra: dict[str, Any] = field(default_factory=dict)  # shown in the handle's extra (tests, operators)


@dataclass
class Location:
    """Where a starting desktop is: its daemon's base URL once it has an address, or why it will never run."""

    url: str | None = None
    fate: str | None = None


class ClusterEngine(Protocol):
    """The engine-specific half: thin, and nothing but API calls to the orchestrator."""

    name: str  # the value of LABEL_BACKEND on everything it creates

    async def prepare(self) -> None:
        """Check the orchestrator is usable (raises ``ConfigError`` saying how to fix it), set up what every
        desktop shares (a network, a network policy, a template)."""
        ...

    def pool_size(self) -> int:
        """Desktops the shared warm pool keeps started (0 when the engine pools them itself)."""
        ...

    def egress_proxy(self) -> ProxyListen | None:
        """Where each desktop's egress proxy listens, or None: its egress is the engine's network alone."""
        ...

    async def create(self, spec: DesktopSpec) -> Placement:
        """Start one desktop. Raises ``DeskpilotError`` (nothing of it left behind is the caller's to remove)."""
        ...

    async def locate(self, ref: Any) -> Location:
        """Where the desktop's daemon listens now, or why it has stopped (never raises for a dead desktop)."""
        ...

    async def remove_labelled(self, labels: dict[str, str]) -> int:
        """Remove every desktop (and its secret) carrying all these labels; the number of desktops removed."""
        ...

    def remove_now(self, refs: list[Any]) -> None:
        """Synchronous last resort at interpreter exit (no event loop left): remove these desktops."""
        ...

    async def close(self) -> None:
        """Undo ``prepare`` where it is ours to undo."""
        ...


class ClusterClient(DesktopClient):
    """A ``DesktopClient`` over TCP that, when the daemon is unreachable, asks the engine what happened."""

    def __init__(self, *, base_url: str, token: str, engine: ClusterEngine, ref: Any, timeout_s: float) -> None:
        super().__init__(base_url, token=token, timeout_s=timeout_s)
        self._engine, self._ref = engine, ref

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await super()._request(method, path, **kwargs)
        except DesktopLostError as exc:
            fate = (await self._engine.locate(self._ref)).fate
            raise DesktopLostError(f"desktop lost: {fate or 'it runs but its daemon is gone'} "
                                   f"({exc.message})") from exc


@dataclass
class _Desktop:
    spec: DesktopSpec
    placement: Placement
    client: ClusterClient | None = None
    session_id: str = ""
    egress: EgressProxy | None = None


class ClusterBackend:
    """``DesktopBackend`` on an orchestrator: the engine starts desktops, this class manages them."""

    def __init__(self, settings: Settings, engine: ClusterEngine, *, instance: str) -> None:
        self.settings = settings
        self.cluster = engine
        self.instance = instance
        self.labels = base_labels(instance, engine.name)
        self._live: dict[str, _Desktop] = {}
        self._pool: list[_Desktop] = []
        self._filling: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._started = False
        self._closed = False

    # --- DesktopBackend -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Prepare the engine, remove this instance's orphans, then start filling the warm pool."""
        async with self._start_lock:
            if self._started:
                return
            await self.cluster.prepare()
            removed = await self.cluster.remove_labelled(self.labels)
            if removed:
                log.info("removed %d orphaned desktop(s) of %s", removed, self.cluster.name)
            self._started = True
            atexit.register(self._remove_all_now)
        self._refill()

    async def acquire(self, session_id: str, width: int, height: int) -> DesktopHandle:
        await self.start()
        desktop = await self._take_warm(width, height)
        if desktop is None:
            desktop = await self._start_desktop(width, height, session_id)
        desktop.session_id = session_id
        self._live[desktop.spec.key] = desktop
        self._refill()
        assert desktop.client is not None  # a started desktop has one
        log.info("desktop %s (%s %s) serves session %s", desktop.spec.key, self.cluster.name, desktop.spec.name,
                 session_id)
        return DesktopHandle(id=desktop.spec.key, client=desktop.client, vnc_available=True,
                             session_id=session_id, egress=desktop.egress,
                             extra={"name": desktop.spec.name, **desktop.placement.extra})

    async def release(self, handle: DesktopHandle) -> None:
        desktop = self._live.pop(handle.id, None)
        if desktop is not None:
            await self._destroy(desktop)

    async def aclose(self) -> None:
        """Remove the warm pool and every desktop still in use, then undo the engine's preparation."""
        self._closed = True
        atexit.unregister(self._remove_all_now)
        if self._filling is not None:
            self._filling.cancel()
            with contextlib.suppress(BaseException):
                await self._filling
        desktops = [*self._pool, *self._live.values()]
        self._pool, self._live = [], {}
        await asyncio.gather(*(self._destroy(d) for d in desktops))
        if self._started:
            await self.cluster.close()

    # --- warm pool ------------------------------------------------------------------------------------

    async def wait_pool_ready(self, within_s: float = 120.0) -> None:
        """Wait until the warm pool is full (tests and benchmarks)."""
        await self.start()
        deadline = time.monotonic() + within_s
        while len(self._pool) < self.cluster.pool_size():
            if time.monotonic() > deadline:
                raise DesktopStartError("the warm pool did not fill in time")
            if self._filling is None or self._filling.done():
                self._refill()
            await asyncio.sleep(_POLL_S)

    def pool_names(self) -> list[str]:
        """Names of the warm pool's desktops, oldest first (tests and benchmarks)."""
        return [d.spec.name for d in self._pool]

    async def _take_warm(self, width: int, height: int) -> _Desktop | None:
        while self._pool:
            desktop = self._pool.pop(0)
            if (desktop.spec.width, desktop.spec.height) != (width, height):
                self._pool.append(desktop)
                return None
            assert desktop.client is not None
            if await desktop.client.healthz():
                return desktop
            log.warning("warm desktop %s died while idle; discarding it", desktop.spec.key)
            await self._destroy(desktop)
        return None

    def _refill(self) -> None:
        if self._closed or (self._filling is not None and not self._filling.done()):
            return
        if len(self._pool) < self.cluster.pool_size():
            self._filling = asyncio.get_running_loop().create_task(self._fill())

    async def _fill(self) -> None:
        while not self._closed and len(self._pool) < self.cluster.pool_size():
            try:
                desktop = await self._start_desktop(self.settings.screen_width, self.settings.screen_height, "")
                assert desktop.client is not None
                # One screenshot now loads the computer tool, so the session's first costs what any later does.
                await desktop.client.screenshot()
            except DeskpilotError as exc:  # the next acquire tries again; sessions still get cold desktops
                log.error("warm pool: %s", exc.message)
                return
            if self._closed:
                await self._destroy(desktop)
                return
            self._pool.append(desktop)

    # --- desktops -------------------------------------------------------------------------------------

    def name_of(self, key: str) -> str:
        return f"deskpilot-{self.instance[:6]}-{key}"

    async def _start_desktop(self, width: int, height: int, session_id: str) -> _Desktop:
        key = secrets.token_hex(6)
        egress = await self._start_egress()
        spec = DesktopSpec(key=key, name=self.name_of(key), labels={**self.labels, LABEL_DESKTOP: key},
                           token=secrets.token_urlsafe(32), width=width, height=height, session_id=session_id,
                           proxy=egress.address if egress is not None else None)
        try:
            placement = await self.cluster.create(spec)
        except BaseException:
            await asyncio.shield(self._remove(key))
            if egress is not None:
                await egress.aclose()
            raise
        desktop = _Desktop(spec, placement, egress=egress)
        try:
            await self._wait_ready(desktop)
        except BaseException:
            await asyncio.shield(self._destroy(desktop))
            raise
        return desktop

    async def _wait_ready(self, desktop: _Desktop) -> None:
        # Scheduling and pulling the image come on top of the desktop's own start: twice the Docker backend's.
        deadline = time.monotonic() + 2 * self.settings.desktop_start_timeout_s
        while True:
            where = await self.cluster.locate(desktop.placement.ref)
            if where.fate is not None:
                raise DesktopStartError(f"desktop {desktop.spec.name} did not start: {where.fate}")
            if where.url is not None and desktop.client is None:
                if desktop.egress is not None:  # its proxy serves this desktop's address alone
                    desktop.egress.clients = frozenset({urlsplit(where.url).hostname or ""})
                # A bash call may take all of bash_timeout_s: the client waits a little longer.
                desktop.client = ClusterClient(base_url=where.url, token=desktop.placement.token,
                                               engine=self.cluster, ref=desktop.placement.ref,
                                               timeout_s=self.settings.bash_timeout_s + 30)
            if desktop.client is not None and await desktop.client.healthz():
                return
            if time.monotonic() > deadline:
                raise DesktopStartError(f"desktop {desktop.spec.name} did not become healthy in time")
            await asyncio.sleep(_POLL_S)

    async def _destroy(self, desktop: _Desktop) -> None:
        if desktop.client is not None:
            with contextlib.suppress(Exception):
                await desktop.client.aclose()
        await self._remove(desktop.spec.key)
        if desktop.egress is not None:
            await desktop.egress.aclose()

    async def _start_egress(self) -> EgressProxy | None:
        """The desktop's egress proxy on the first free port of the engine's range; it admits nobody until
        its desktop has an address."""
        listen = self.cluster.egress_proxy()
        if listen is None:
            return None
        for port in listen.ports:
            proxy = start_proxy(self.settings, listen_host=listen.host, listen_port=port)
            proxy.clients = frozenset()
            try:
                return await proxy.start()
            except OSError:  # taken (another desktop's, another process's): the next one
                continue
        raise DesktopStartError(f"no free port for a desktop's egress proxy on {listen.host} in "
                                f"{listen.ports.start}-{listen.ports.stop - 1}")

    async def _remove(self, key: str) -> None:
        try:
            await self.cluster.remove_labelled({**self.labels, LABEL_DESKTOP: key})
        except DeskpilotError as exc:  # release never raises: the next start removes it as an orphan
            log.error("could not remove desktop %s: %s", key, exc.message)

    def _remove_all_now(self) -> None:
        desktops = [*self._pool, *self._live.values()]
        self._pool, self._live = [], {}
        with contextlib.suppress(Exception):
            self.cluster.remove_now([d.placement.ref for d in desktops])
