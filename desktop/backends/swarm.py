"""Docker Swarm desktop backend: one Swarm service (replicas 1) per session, on an encrypted overlay network.

Each desktop is a service of the desktop image running ``deskpilot desktopd`` on TCP port 7000 on the overlay
network ``swarm_network`` only (``--private-network``): endpoint mode ``dnsrr``, so no virtual IP, no routing
mesh, nothing published. The backend creates that network when missing (overlay, ``attachable``,
``encrypted``: IPsec between nodes) and reaches each daemon by its service name. So this process must be on
the network too: as a Swarm service of the stack attached to it, or as a plain container that the backend
connects at start (``swarm_attach_container``). Each daemon's bearer token is a Swarm secret, created per
desktop and removed with it: a file on a tmpfs in the task, never an environment variable.

Hardening is the Docker backend's, translated from its container arguments (user, capabilities, read-only
root, tmpfs, memory/CPU/pids limits, environment, labels), so both backends keep one definition. Swarm
services (engine API 1.41) cannot set ``no-new-privileges``; the image has no setuid programs, so nothing
can gain privileges through exec anyway. Placement constraints and resource reservations come from settings.
Restart condition ``none``: a desktop that dies is reported lost, never silently replaced. Services and
secrets carry the Docker backend's labels, so a restarted service removes its orphans.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import httpx
from docker.types import (
    EndpointSpec,
    Healthcheck,
    Mount,
    Resources,
    RestartPolicy,
    SecretReference,
    ServiceMode,
)
from docker.utils import parse_bytes

from deskpilot.errors import ConfigError, DesktopLostError, DesktopStartError
from deskpilot.settings import Settings, get_settings
from desktop.backends.base import DesktopHandle
from desktop.backends.docker import LABEL_DESKTOP, LABEL_INSTANCE, LABEL_MANAGED, DockerBackend
from desktop.client import DesktopClient

log = logging.getLogger(__name__)

DAEMON_PORT = 7000
TOKEN_FILE = "deskpilot-token"  # noqa: S105  (a file name under /run/secrets in the task, not a secret)
LABEL_BACKEND = "deskpilot.backend"
_ENDED = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}
_POLL_S = 0.2
_GONE_WITHIN_S = 30.0
# The desktop image's entry point serves on a unix socket in a bind mount; here the daemon serves TCP instead.
_START = 'mkdir -p "$HOME" "$DESKPILOT_DATA_DIR" && exec deskpilot desktopd "$@"'


def _task_fate(service: Any) -> str | None:
    """Why a desktop service's task is not running (None while it is, or is still on its way)."""
    try:
        service.reload()
        tasks = service.tasks()
    except docker.errors.NotFound:
        return f"service {service.name} was removed"
    for task in tasks:
        status = task.get("Status", {})
        if status.get("State") in _ENDED:
            detail = status.get("Err") or status.get("Message") or ""
            return f"task of {service.name} {status.get('State')}: {detail}".rstrip(": ")
    return None


class ServiceClient(DesktopClient):
    """A ``DesktopClient`` that, when the daemon is unreachable, says what happened to its service's task."""

    def __init__(self, *, base_url: str, token: str, service: Any) -> None:
        super().__init__(base_url, token=token)
        self._service = service

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await super()._request(method, path, **kwargs)
        except DesktopLostError as exc:
            fate = await asyncio.to_thread(_task_fate, self._service)
            raise DesktopLostError(f"desktop lost: {fate or 'its task runs but the daemon is gone'} "
                                   f"({exc.message})") from exc


@dataclass
class _Desktop:
    key: str
    service: Any
    client: DesktopClient


class SwarmBackend:
    """``DesktopBackend`` on a Docker Swarm (this engine must be a manager: ``docker swarm init``)."""

    def __init__(self, settings: Settings | None = None, *, start_url: str | None = None, kiosk: bool = False,
                 engine: Any = None) -> None:
        self.settings = settings or get_settings()
        # The Docker backend holds the engine connection and the one definition of a desktop's container.
        self._docker = DockerBackend(self.settings, start_url=start_url, kiosk=kiosk, engine=engine)
        self.instance = self._docker.instance
        self._labels = {LABEL_MANAGED: "1", LABEL_INSTANCE: self.instance, LABEL_BACKEND: "swarm"}
        self._live: dict[str, _Desktop] = {}
        self._start_lock = asyncio.Lock()
        self._started = False
        self._attached = False  # whether start() connected swarm_attach_container (aclose disconnects it)

    def engine(self) -> Any:
        return self._docker.engine()

    # --- DesktopBackend -------------------------------------------------------------------------------

    async def acquire(self, session_id: str, width: int, height: int) -> DesktopHandle:
        await self.start()
        key = secrets.token_hex(6)
        token = secrets.token_urlsafe(32)
        name = f"deskpilot-{self.instance[:6]}-{key}"
        try:
            secret = await asyncio.to_thread(self.engine().secrets.create, name=f"{name}-token",
                                             data=token.encode(), labels={**self._labels, LABEL_DESKTOP: key})
            service = await asyncio.to_thread(self.engine().services.create,
                                              **self._service_spec(name, key, secret, width, height, session_id))
        except docker.errors.APIError as exc:  # (a missing image shows later, as the task's rejection)
            await asyncio.to_thread(self._remove_labelled, {LABEL_DESKTOP: key})
            raise DesktopStartError(f"could not start a desktop service: {exc}") from exc
        client = ServiceClient(base_url=f"http://{name}:{DAEMON_PORT}", token=token, service=service)
        desktop = _Desktop(key, service, client)
        try:
            await self._wait_ready(desktop)
        except BaseException:
            await asyncio.shield(self._destroy(desktop))
            raise
        self._live[key] = desktop
        log.info("desktop %s (swarm service %s) serves session %s", key, name, session_id)
        return DesktopHandle(id=key, client=client, vnc_available=True, session_id=session_id,
                             extra={"service": service.id})

    async def release(self, handle: DesktopHandle) -> None:
        desktop = self._live.pop(handle.id, None)
        if desktop is not None:
            await self._destroy(desktop)

    # --- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the swarm, remove this instance's orphans, ensure the overlay network and join it."""
        async with self._start_lock:
            if self._started:
                return
            await asyncio.to_thread(self._prepare)
            self._started = True
            atexit.register(self._remove_all_now)

    async def aclose(self) -> None:
        """Remove every desktop, leave the overlay network and remove it when nothing else is on it."""
        atexit.unregister(self._remove_all_now)
        desktops, self._live = list(self._live.values()), {}
        await asyncio.gather(*(self._destroy(d) for d in desktops))
        if self._started:
            await asyncio.to_thread(self._leave_network)

    def _prepare(self) -> None:
        engine = self.engine()
        swarm = engine.info().get("Swarm", {})
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise ConfigError("the swarm backend needs this Docker engine to be a swarm manager "
                              "(`docker swarm init`, or DOCKER_HOST naming a manager)")
        removed = self._remove_labelled({})
        if removed:
            log.info("removed %d orphaned desktop service(s)", removed)
        network = self._network()
        attach = self.settings.swarm_attach_container
        if attach:
            try:
                network.connect(attach)
                self._attached = True
            except docker.errors.APIError as exc:
                if "already exists" not in str(exc):
                    raise ConfigError(f"cannot connect {attach!r} to {network.name}: {exc}") from exc

    def _network(self) -> Any:
        engine, name = self.engine(), self.settings.swarm_network
        try:
            network = engine.networks.get(name)
        except docker.errors.NotFound:
            try:
                return engine.networks.create(name, driver="overlay", attachable=True, options={"encrypted": ""},
                                              labels={LABEL_MANAGED: "1", LABEL_BACKEND: "swarm"})
            except docker.errors.APIError:  # another replica created it meanwhile
                network = engine.networks.get(name)
        if network.attrs.get("Driver") != "overlay" or not network.attrs.get("Attachable"):
            raise ConfigError(f"network {name!r} exists but is not an attachable overlay network")
        return network

    def _leave_network(self) -> None:
        try:
            network = self.engine().networks.get(self.settings.swarm_network)
        except docker.errors.DockerException:
            return
        if self._attached:
            with contextlib.suppress(docker.errors.APIError):
                network.disconnect(self.settings.swarm_attach_container)
            self._attached = False
        if network.attrs.get("Labels", {}).get(LABEL_MANAGED) == "1":
            with contextlib.suppress(docker.errors.APIError):  # still in use by another replica or its desktops
                network.remove()

    def _remove_labelled(self, extra: dict[str, str]) -> int:
        """Remove this instance's desktop services (and wait for their containers), then their secrets."""
        labels = [f"{k}={v}" for k, v in {**self._labels, **extra}.items()]
        engine = self.engine()
        services = engine.services.list(filters={"label": labels})
        for service in services:
            with contextlib.suppress(docker.errors.NotFound):
                service.remove()
        self._wait_gone([s.id for s in services])
        for secret in engine.secrets.list(filters={"label": labels}):
            with contextlib.suppress(docker.errors.NotFound):
                secret.remove()
        return len(services)

    def _wait_gone(self, service_ids: list[str]) -> None:
        """Service removal is asynchronous: wait until the tasks' containers are gone from this node."""
        deadline = time.monotonic() + _GONE_WITHIN_S
        for service_id in service_ids:
            while self.engine().containers.list(all=True,
                                                filters={"label": f"com.docker.swarm.service.id={service_id}"}):
                if time.monotonic() > deadline:
                    log.warning("the containers of desktop service %s are still being removed", service_id[:12])
                    return
                time.sleep(_POLL_S)

    def _remove_all_now(self) -> None:
        """Synchronous last resort at interpreter exit: remove every service this backend started."""
        desktops, self._live = list(self._live.values()), {}
        for desktop in desktops:
            with contextlib.suppress(Exception):
                desktop.service.remove()

    # --- services -------------------------------------------------------------------------------------

    def _service_spec(self, name: str, key: str, secret: Any, width: int, height: int,
                      session_id: str) -> dict[str, Any]:
        s = self.settings
        # The Docker backend's container for this desktop, minus its socket bind mount (no shared host here).
        c = self._docker._container_args(key, Path("/nonexistent"), width, height, session_id)
        uid, _, gid = str(c["user"]).partition(":")
        mounts = [Mount(target, None, type="tmpfs", tmpfs_size=_tmpfs_option(opts, "size"),
                        tmpfs_mode=int(_tmpfs_option(opts, "mode") or "1777", 8))
                  for target, opts in c["tmpfs"].items()]
        mounts.append(Mount("/dev/shm", None, type="tmpfs", tmpfs_size=parse_bytes(c["shm_size"])))  # noqa: S108
        resources = Resources(cpu_limit=c["nano_cpus"], mem_limit=parse_bytes(c["mem_limit"]),
                              cpu_reservation=int(s.swarm_cpu_reservation * 1e9),
                              mem_reservation=parse_bytes(s.swarm_memory_reservation))
        resources["Limits"]["Pids"] = c["pids_limit"]
        daemon_args = ["--host", "0.0.0.0", "--port", str(DAEMON_PORT), "--private-network",
                       "--token-file", f"/run/secrets/{TOKEN_FILE}", *c["command"]]
        return {
            "name": name,
            "image": c["image"],
            "command": ["/usr/bin/tini", "--", "/bin/sh", "-c", _START, "desktopd"],
            "args": daemon_args,
            "env": [f"{k}={v}" for k, v in c["environment"].items()],
            "user": c["user"],
            "labels": {**self._labels, LABEL_DESKTOP: key},
            "container_labels": c["labels"],
            "read_only": c["read_only"],
            "cap_drop": c["cap_drop"],
            "cap_add": c.get("cap_add"),
            "mounts": mounts,
            "secrets": [SecretReference(secret.id, secret.name, filename=TOKEN_FILE, uid=uid, gid=gid or uid,
                                        mode=0o400)],
            # The image's HEALTHCHECK asks the unix socket this desktop does not have; the backend polls /healthz.
            "healthcheck": Healthcheck(test=["NONE"]),
            "stop_grace_period": 5_000_000_000,
            "resources": resources,
            "restart_policy": RestartPolicy(condition="none"),
            "mode": ServiceMode("replicated", replicas=1),
            "endpoint_spec": EndpointSpec(mode="dnsrr"),
            "networks": [s.swarm_network],
            "constraints": list(s.swarm_constraints),
        }

    async def _wait_ready(self, desktop: _Desktop) -> None:
        # Scheduling and pulling come on top of the desktop's own start: twice the Docker backend's bound.
        deadline = time.monotonic() + 2 * self.settings.desktop_start_timeout_s
        while True:
            fate = await asyncio.to_thread(_task_fate, desktop.service)
            if fate is not None:
                raise DesktopStartError(f"desktop service did not start: {fate}")
            if await desktop.client.healthz():
                return
            if time.monotonic() > deadline:
                raise DesktopStartError("desktop service did not become healthy in time")
            await asyncio.sleep(_POLL_S)

    async def _destroy(self, desktop: _Desktop) -> None:
        with contextlib.suppress(Exception):
            await desktop.client.aclose()
        await asyncio.to_thread(self._remove_labelled, {LABEL_DESKTOP: desktop.key})


def _tmpfs_option(options: str, name: str) -> Any:
    for option in options.split(","):
        key, _, value = option.partition("=")
        if key == name:
            return parse_bytes(value) if name == "size" else value
    return None
