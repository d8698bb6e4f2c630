"""Docker Swarm desktop backend: one Swarm service (replicas 1) per session, on an encrypted overlay network.

The engine-neutral part (warm pool, names and labels, tokens, readiness over TCP, release) is
``desktop/backends/cluster.py``; this module is the Swarm engine under it. Each desktop is a service of the
desktop image running ``deskpilot desktopd`` on TCP port 7000 on the overlay network ``swarm_network`` only
(``--private-network``): endpoint mode ``dnsrr``, so no virtual IP, no routing mesh, nothing published. The
engine creates that network when missing (overlay, ``attachable``, ``encrypted``: IPsec between nodes) and
reaches each daemon by its service name. So this process must be on the network too: as a Swarm service of the
stack attached to it, or as a plain container that the engine connects at start (``swarm_attach_container``).
Each daemon's bearer token is a Swarm secret, created per desktop and removed with it: a file on a tmpfs in
the task, never an environment variable.

Hardening is the Docker backend's (``desktop/backends/container.py``), translated (user, capabilities,
read-only root, tmpfs, memory/CPU/pids limits, environment, labels), so every backend keeps one definition.
Swarm services (engine API 1.41) cannot set ``no-new-privileges``; the image has no setuid programs, so nothing
can gain privileges through exec anyway. Placement constraints and resource reservations come from settings.
Restart condition ``none``: a desktop that dies is reported lost, never silently replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import docker.errors
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

from deskpilot.errors import ConfigError, DesktopStartError
from deskpilot.settings import Settings
from desktop.backends.cluster import DAEMON_PORT, LABEL_BACKEND, ClusterBackend, DesktopSpec, Location, Placement
from desktop.backends.container import LABEL_MANAGED, container_args
from desktop.backends.docker import DockerBackend

log = logging.getLogger(__name__)

TOKEN_FILE = "deskpilot-token"  # noqa: S105  (a file name under /run/secrets in the task, not a secret)
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
    except docker.errors.DockerException as exc:
        return f"service {service.name} cannot be inspected: {exc}"
    for task in tasks:
        status = task.get("Status", {})
        if status.get("State") in _ENDED:
            detail = status.get("Err") or status.get("Message") or ""
            return f"task of {service.name} {status.get('State')}: {detail}".rstrip(": ")
    return None


class SwarmEngine:
    """``ClusterEngine`` on a Docker Swarm (this engine must be a manager: ``docker swarm init``)."""

    name = "swarm"

    def __init__(self, settings: Settings, *, start_url: str | None = None, kiosk: bool = False,
                 engine: Any = None) -> None:
        self.settings = settings
        # The Docker backend holds the engine connection and names this service's desktops (its instance).
        self.docker = DockerBackend(settings, start_url=start_url, kiosk=kiosk, engine=engine)
        self._attached = False  # whether prepare() connected swarm_attach_container (close disconnects it)

    def pool_size(self) -> int:
        return self.settings.swarm_warm_pool

    def egress_proxy(self) -> None:
        return None  # Swarm desktops get no per-session egress proxy (not wired up for this engine yet)

    async def prepare(self) -> None:
        await asyncio.to_thread(self._prepare)

    async def create(self, spec: DesktopSpec) -> Placement:
        engine = self.docker.engine()
        try:
            secret = await asyncio.to_thread(engine.secrets.create, name=f"{spec.name}-token",
                                             data=spec.token.encode(), labels=spec.labels)
            service = await asyncio.to_thread(engine.services.create, **self.service_spec(spec, secret))
        except docker.errors.APIError as exc:  # (a missing image shows later, as the task's rejection)
            raise DesktopStartError(f"could not start a desktop service: {exc}") from exc
        return Placement(ref=service, token=spec.token, extra={"service": service.id})

    async def locate(self, ref: Any) -> Location:
        fate = await asyncio.to_thread(_task_fate, ref)
        return Location(url=None if fate else f"http://{ref.name}:{DAEMON_PORT}", fate=fate)

    async def remove_labelled(self, labels: dict[str, str]) -> int:
        return await asyncio.to_thread(self._remove_labelled, labels)

    def remove_now(self, refs: list[Any]) -> None:
        for service in refs:
            with contextlib.suppress(Exception):
                service.remove()

    async def close(self) -> None:
        await asyncio.to_thread(self._leave_network)

    # --- the swarm, its network -------------------------------------------------------------------------

    def _prepare(self) -> None:
        engine = self.docker.engine()
        swarm = engine.info().get("Swarm", {})
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise ConfigError("the swarm backend needs this Docker engine to be a swarm manager "
                              "(`docker swarm init`, or DOCKER_HOST naming a manager)")
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
        engine, name = self.docker.engine(), self.settings.swarm_network
        try:
            network = engine.networks.get(name)
        except docker.errors.NotFound:
            try:
                return engine.networks.create(name, driver="overlay", attachable=True, options={"encrypted": ""},
                                              labels={LABEL_MANAGED: "1", LABEL_BACKEND: self.name})
            except docker.errors.APIError:  # another replica created it meanwhile
                network = engine.networks.get(name)
        if network.attrs.get("Driver") != "overlay" or not network.attrs.get("Attachable"):
            raise ConfigError(f"network {name!r} exists but is not an attachable overlay network")
        return network

    def _leave_network(self) -> None:
        try:
            network = self.docker.engine().networks.get(self.settings.swarm_network)
        except docker.errors.DockerException:
            return
        if self._attached:
            with contextlib.suppress(docker.errors.APIError):
                network.disconnect(self.settings.swarm_attach_container)
            self._attached = False
        if network.attrs.get("Labels", {}).get(LABEL_MANAGED) == "1":
            with contextlib.suppress(docker.errors.APIError):  # still in use by another replica or its desktops
                network.remove()

    def _remove_labelled(self, labels: dict[str, str]) -> int:
        """Remove the desktop services with these labels (and wait for their containers), then their secrets."""
        selector = [f"{k}={v}" for k, v in labels.items()]
        engine = self.docker.engine()
        services = engine.services.list(filters={"label": selector})
        for service in services:
            with contextlib.suppress(docker.errors.NotFound):
                service.remove()
        self._wait_gone([s.id for s in services])
        for secret in engine.secrets.list(filters={"label": selector}):
            with contextlib.suppress(docker.errors.NotFound):
                secret.remove()
        return len(services)

    def _wait_gone(self, service_ids: list[str]) -> None:
        """Service removal is asynchronous: wait until the tasks' containers are gone from this node."""
        deadline = time.monotonic() + _GONE_WITHIN_S
        engine = self.docker.engine()
        for service_id in service_ids:
            while engine.containers.list(all=True, filters={"label": f"com.docker.swarm.service.id={service_id}"}):
                if time.monotonic() > deadline:
                    log.warning("the containers of desktop service %s are still being removed", service_id[:12])
                    return
                time.sleep(_POLL_S)

    # --- services -------------------------------------------------------------------------------------

    def service_spec(self, spec: DesktopSpec, secret: Any) -> dict[str, Any]:
        s, d = self.settings, self.docker
        # The Docker backend's container for this desktop, minus its socket bind mount (no shared host here).
        c = container_args(s, instance=d.instance, name=spec.name, key=spec.key, run_dir=Path("/nonexistent"),
                           width=spec.width, height=spec.height, session_id=spec.session_id,
                           start_url=d.start_url, kiosk=d.kiosk)
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
            "name": spec.name,
            "image": c["image"],
            "command": ["/usr/bin/tini", "--", "/bin/sh", "-c", _START, "desktopd"],
            "args": daemon_args,
            "env": [f"{k}={v}" for k, v in c["environment"].items()],
            "user": c["user"],
            "labels": spec.labels,
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


class SwarmBackend(ClusterBackend):
    """``DesktopBackend`` on a Docker Swarm: the shared cluster backend over ``SwarmEngine``."""

    def __init__(self, settings: Settings, *, start_url: str | None = None, kiosk: bool = False,
                 engine: Any = None) -> None:
        self.swarm = SwarmEngine(settings, start_url=start_url, kiosk=kiosk, engine=engine)
        super().__init__(settings, self.swarm, instance=self.swarm.docker.instance)

    def engine(self) -> Any:
        """The Docker SDK client (tests and tools inspect the services through it)."""
        return self.swarm.docker.engine()


def _tmpfs_option(options: str, name: str) -> Any:
    for option in options.split(","):
        key, _, value = option.partition("=")
        if key == name:
            return parse_bytes(value) if name == "size" else value
    return None
