"""Kubernetes desktop backend: a hardened Pod per session (or a claim on agent-sandbox's warm pool).

The engine-neutral part (warm pool, names and labels, tokens, readiness over TCP, release) is
``desktop/backends/cluster.py``; this module is the Kubernetes engine under it, and the objects it creates are
``desktop/backends/kube_spec.py``. The client is kr8s: asyncio-native on httpx like the rest of the service
(the official client is synchronous and generated; kubernetes-asyncio is a large generated package).

Each desktop's daemon serves authenticated TCP on port 7000 of its pod's IP, which the service reaches
directly: no Service, nothing published. Its bearer token is a Secret mounted as a file, created per desktop
and removed with it. Its egress goes through its session's egress proxy in this process, on this pod's IP
(``kubernetes_egress=proxy``; ``direct``: address ranges instead). A NetworkPolicy per backend instance lets
only the service's pods reach the daemon and the desktops reach only the proxies' ports (or those ranges).
Everything carries the instance's labels (a restarted service removes its orphans) and, with
``kubernetes_owner_pod``, an owner reference to the service's own pod, so Kubernetes removes a dead replica's
desktops.

When the agent-sandbox CRDs (``extensions.agents.x-k8s.io/v1beta1``) are served, found through API discovery,
the instance keeps a SandboxTemplate and a SandboxWarmPool and each desktop is a SandboxClaim on that pool:
the controller keeps the pool warm and hands out its pods. Pooled pods are started before they are claimed,
so they share one token per instance (a Secret replaced at every start) instead of one per desktop.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import kr8s.asyncio
from kr8s import APITimeoutError, NotFoundError, ServerError
from kr8s.asyncio.objects import APIObject, NetworkPolicy, Pod, Secret, new_class

from deskpilot.errors import ConfigError, DeskpilotError, DesktopError, DesktopStartError
from deskpilot.settings import Settings
from desktop.backends.cluster import (
    DAEMON_PORT,
    ClusterBackend,
    DesktopSpec,
    Location,
    Placement,
    ProxyListen,
    base_labels,
)
from desktop.backends.container import LABEL_DESKTOP
from desktop.backends.kube_spec import (
    SANDBOX_GROUP,
    SANDBOX_RESOURCES,
    SANDBOX_VERSION,
    desktop_pod,
    network_policy_spec,
    sandbox_claim,
    sandbox_template,
    sandbox_warm_pool,
    token_secret,
)

log = logging.getLogger(__name__)

SandboxTemplate = new_class("SandboxTemplate", SANDBOX_VERSION, namespaced=True)
SandboxWarmPool = new_class("SandboxWarmPool", SANDBOX_VERSION, namespaced=True)
SandboxClaim = new_class("SandboxClaim", SANDBOX_VERSION, namespaced=True)
_WAITING_FOR_EVER = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                     "CreateContainerError", "RunContainerError"}


def _api_error(code: int, what: str, message: str) -> DeskpilotError:
    detail = f"HTTP {code}: {message}" if code else message
    if code in (401, 403):
        return ConfigError(f"the Kubernetes API refused to {what} ({detail}); the service account needs the "
                           "Role in deploy/kubernetes/base/rbac.yaml")
    if code in (400, 422):
        return ConfigError(f"the Kubernetes API rejected the request to {what} as invalid ({detail})")
    if code == 409:
        return DesktopStartError(f"could not {what}: it already exists ({detail})")
    return DesktopStartError(f"the Kubernetes API failed to {what} ({detail})")


@contextlib.asynccontextmanager
async def calling(what: str) -> AsyncIterator[None]:
    """Turn the client's errors into deskpilot's: what the backend was doing, and what to do about it."""
    try:
        yield
    except ServerError as exc:
        code = exc.response.status_code if exc.response is not None else 0
        raise _api_error(code, what, str(exc)) from exc
    except (httpx.TransportError, APITimeoutError) as exc:
        raise DesktopStartError(f"cannot reach the Kubernetes API to {what}: {exc}") from exc


class KubernetesEngine:
    """``ClusterEngine`` on a Kubernetes namespace."""

    name = "kubernetes"

    def __init__(self, settings: Settings, *, instance: str, start_url: str, kiosk: bool) -> None:
        self.settings = settings
        self.start_url, self.kiosk = start_url, kiosk
        self.labels = base_labels(instance, self.name)
        self.shared_name = f"deskpilot-{instance[:6]}"  # the instance's policy, template, pool and pool secret
        self.namespace = settings.kubernetes_namespace
        self.sandboxes = False  # whether desktops are claims on an agent-sandbox warm pool
        self._api: Any = None
        self._owner: list[dict[str, Any]] = []
        self._pool_token = ""

    def pool_size(self) -> int:
        return 0 if self.sandboxes else self.settings.kubernetes_warm_pool

    def egress_proxy(self) -> ProxyListen | None:
        # Pooled agent-sandbox pods start before they are claimed: no per-desktop proxy address to give them.
        s = self.settings
        if s.kubernetes_egress != "proxy" or self.sandboxes:
            return None
        return ProxyListen(s.kubernetes_proxy_host, range(s.kubernetes_proxy_port_min, s.kubernetes_proxy_port_max + 1))

    # --- preparation ----------------------------------------------------------------------------------

    async def prepare(self) -> None:
        try:
            await self._prepare()
        except BaseException:
            await self._close_session()
            raise

    async def _prepare(self) -> None:
        s = self.settings
        if s.kubernetes_proxy_port_min > s.kubernetes_proxy_port_max:
            raise ConfigError("DESKPILOT_KUBERNETES_PROXY_PORT_MIN is above DESKPILOT_KUBERNETES_PROXY_PORT_MAX")
        try:
            async with calling("connect to the Kubernetes API"):
                self._api = await kr8s.asyncio.api(kubeconfig=str(s.kubernetes_kubeconfig or "") or None,
                                                   namespace=s.kubernetes_namespace or None)
        except DeskpilotError:
            raise
        except Exception as exc:  # kr8s raises plain exceptions for a missing or broken kubeconfig
            raise ConfigError(f"the kubernetes backend has no usable Kubernetes configuration: {exc}") from exc
        self.namespace = s.kubernetes_namespace or self._api.namespace
        async with calling(f"list desktop pods in namespace {self.namespace}"):
            async for _ in self._api.get(Pod, namespace=self.namespace, label_selector=self.labels):
                break
        if s.kubernetes_owner_pod:
            owner = self._object(Pod, s.kubernetes_owner_pod)
            try:
                async with calling(f"read this service's pod {s.kubernetes_owner_pod}"):
                    await owner.refresh()
            except NotFoundError as exc:  # owner references cannot cross namespaces
                raise ConfigError(f"DESKPILOT_KUBERNETES_OWNER_POD: no pod {s.kubernetes_owner_pod} in the desktops' "
                                  f"namespace {self.namespace} (the owner must be in the same namespace)") from exc
            self._owner = [{"apiVersion": "v1", "kind": "Pod", "name": owner.name, "uid": owner.metadata["uid"]}]
        self.sandboxes = s.kubernetes_agent_sandbox == "auto" and await self._sandboxes_served()
        if self.sandboxes and s.kubernetes_egress == "proxy":
            log.warning("agent-sandbox desktops have no per-session egress proxy: their egress is the "
                        "NetworkPolicy's ranges (DESKPILOT_KUBERNETES_EGRESS_ALLOW)")
        elif s.kubernetes_egress == "proxy" and not s.kubernetes_proxy_host:
            raise ConfigError("the desktops' egress proxies need this pod's IP: set DESKPILOT_KUBERNETES_PROXY_HOST "
                              "(downward API status.podIP), or DESKPILOT_KUBERNETES_EGRESS=direct")
        policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                  "metadata": self._metadata(self.shared_name),
                  "spec": network_policy_spec(s, self.labels, proxied=self.egress_proxy() is not None)}
        await self._replace(NetworkPolicy, policy, "the desktops' NetworkPolicy")
        if self.sandboxes:
            await self._prepare_pool()
        log.info("kubernetes backend: namespace %s, %s", self.namespace,
                 "agent-sandbox claims" if self.sandboxes else "a pod per desktop")

    async def _sandboxes_served(self) -> bool:
        """API discovery, as kubectl does it: is the agent-sandbox extensions group served with its three kinds?"""
        async with calling("discover the API groups"), self._api.call_api("GET", version="", base="/apis") as r:
            groups = r.json().get("groups", [])
        versions = {v["groupVersion"] for g in groups if g.get("name") == SANDBOX_GROUP
                    for v in g.get("versions", [])}
        if SANDBOX_VERSION not in versions:
            return False
        async with calling("discover agent-sandbox's resources"), \
                self._api.call_api("GET", version="", base="/apis", url=SANDBOX_VERSION) as r:
            served = {res["name"] for res in r.json().get("resources", [])}
        return served >= SANDBOX_RESOURCES

    async def _prepare_pool(self) -> None:
        """The instance's token Secret, SandboxTemplate and SandboxWarmPool, replaced: a fresh token each start."""
        s, name = self.settings, self.shared_name
        self._pool_token = secrets.token_urlsafe(32)
        secret = token_secret(f"{name}-pool-token", self._pool_token, self.labels, self.namespace)
        secret["metadata"]["ownerReferences"] = self._owner
        await self._replace(Secret, secret, "the warm pool's token Secret")
        template = sandbox_template(s, name=name, namespace=self.namespace, labels=self.labels,
                                    secret_name=f"{name}-pool-token", start_url=self.start_url, kiosk=self.kiosk,
                                    owner=self._owner)
        await self._replace(SandboxTemplate, template, "the SandboxTemplate")
        pool = sandbox_warm_pool(name=name, namespace=self.namespace, labels=self.labels,
                                 replicas=s.kubernetes_warm_pool, owner=self._owner)
        await self._replace(SandboxWarmPool, pool, "the SandboxWarmPool")

    # --- desktops -------------------------------------------------------------------------------------

    async def create(self, spec: DesktopSpec) -> Placement:
        if self.sandboxes:
            claim = sandbox_claim(spec, pool=self.shared_name, namespace=self.namespace, owner=self._owner)
            async with calling(f"create the SandboxClaim {spec.name}"):
                await SandboxClaim(claim, api=self._api).create()
            return Placement(ref=spec.name, token=self._pool_token, extra={"claim": spec.name})
        secret = token_secret(f"{spec.name}-token", spec.token, spec.labels, self.namespace)
        secret["metadata"]["ownerReferences"] = self._owner
        async with calling(f"create the token Secret of {spec.name}"):
            await Secret(secret, api=self._api).create()
        pod = desktop_pod(self.settings, spec, namespace=self.namespace, start_url=self.start_url,
                                    kiosk=self.kiosk, owner=self._owner)
        async with calling(f"create the desktop pod {spec.name}"):
            await Pod(pod, api=self._api).create()
        return Placement(ref=spec.name, token=spec.token, extra={"pod": spec.name})

    async def locate(self, ref: Any) -> Location:
        kind = SandboxClaim if self.sandboxes else Pod
        found = self._object(kind, str(ref))
        try:
            async with calling(f"read {kind.kind} {ref}"):
                await found.refresh()
        except NotFoundError:
            return Location(fate=f"{kind.kind} {ref} was removed")
        except DeskpilotError as exc:
            return Location(fate=exc.message)
        return _claim_location(found.raw) if self.sandboxes else _pod_location(found.raw)

    async def remove_labelled(self, labels: dict[str, str]) -> int:
        # Desktops only: the instance's shared objects carry its labels but no desktop key.
        selector = ",".join([*(f"{k}={v}" for k, v in labels.items()),
                             *([] if LABEL_DESKTOP in labels else [LABEL_DESKTOP])])
        kinds: list[type[APIObject]] = [Pod, Secret, *([SandboxClaim] if self.sandboxes else [])]
        removed = 0
        for kind in kinds:
            async with calling(f"list {kind.kind} objects to remove"):
                found = [o async for o in self._api.get(kind, namespace=self.namespace, label_selector=selector)]
            for obj in found:
                with contextlib.suppress(NotFoundError):
                    async with calling(f"remove {kind.kind} {obj.name}"):
                        await obj.delete()
            if kind is not Secret:
                removed += len(found)
        return removed

    def remove_now(self, refs: list[Any]) -> None:
        # No event loop is left at interpreter exit: the owner references (in-cluster) and the next start's
        # clean-up by label remove these.
        if refs:
            log.warning("kubernetes desktops left at exit (removed by their owner or the next start): %s",
                        ", ".join(map(str, refs)))

    async def close(self) -> None:
        if self._api is None:
            return
        shared: list[type[APIObject]] = [NetworkPolicy]
        if self.sandboxes:
            shared = [SandboxWarmPool, SandboxTemplate, Secret, NetworkPolicy]
        for kind in shared:
            name = f"{self.shared_name}-pool-token" if kind is Secret else self.shared_name
            with contextlib.suppress(NotFoundError, DesktopError):  # shutting down: the next start replaces them
                async with calling(f"remove {kind.kind} {name}"):
                    await self._object(kind, name).delete()
        await self._close_session()

    async def _close_session(self) -> None:
        if self._api is not None:
            session, self._api._session = self._api._session, None  # kr8s has no public close
            if session is not None:
                await session.aclose()

    # --- helpers --------------------------------------------------------------------------------------

    def _metadata(self, name: str) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name, "namespace": self.namespace, "labels": self.labels}
        if self._owner:
            metadata["ownerReferences"] = self._owner
        return metadata

    def _object(self, kind: type[APIObject], name: str) -> APIObject:
        return kind({"metadata": {"name": name, "namespace": self.namespace}}, api=self._api)

    async def _replace(self, kind: type[APIObject], manifest: dict[str, Any], what: str) -> None:
        """Create, or delete and create again (a shared object of this instance from an earlier start)."""
        name = manifest["metadata"]["name"]
        with contextlib.suppress(NotFoundError):
            async with calling(f"remove the previous {what}"):
                await self._object(kind, name).delete()
        async with calling(f"create {what}"):
            await kind(manifest, api=self._api).create()


def _pod_location(pod: dict[str, Any]) -> Location:
    status = pod.get("status", {})
    name = pod["metadata"]["name"]
    for container in status.get("containerStatuses", []):
        state = container.get("state", {})
        if (reason := state.get("waiting", {}).get("reason")) in _WAITING_FOR_EVER:
            message = state["waiting"].get("message", "")
            return Location(fate=f"pod {name}: {reason} {message}".rstrip())
        if "terminated" in state:
            ended = state["terminated"]
            return Location(fate=f"pod {name}: container ended ({ended.get('reason', '')}, exit code "
                                 f"{ended.get('exitCode')})")
    if status.get("phase") in ("Failed", "Succeeded"):
        return Location(fate=f"pod {name} {status['phase'].lower()}: {status.get('reason', '')}".rstrip(": "))
    ip = status.get("podIP")
    return Location(url=f"http://{_host(ip)}:{DAEMON_PORT}" if ip else None)


def _claim_location(claim: dict[str, Any]) -> Location:
    status = claim.get("status", {})
    for condition in status.get("conditions", []):
        if condition.get("status") == "False" and condition.get("reason") == "ClaimExpired":
            return Location(fate=f"claim {claim['metadata']['name']} expired: {condition.get('message', '')}")
    ips = status.get("sandbox", {}).get("podIPs") or []
    return Location(url=f"http://{_host(ips[0])}:{DAEMON_PORT}" if ips else None)


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


class KubernetesBackend(ClusterBackend):
    """``DesktopBackend`` on Kubernetes: the shared cluster backend over ``KubernetesEngine``."""

    def __init__(self, settings: Settings, *, start_url: str | None = None, kiosk: bool = False) -> None:
        # Each replica is its own instance: it removes only its own orphans (its pod name or replica id).
        name = settings.replica_id or socket.gethostname()
        instance = hashlib.sha256(f"kubernetes:{name}".encode()).hexdigest()[:12]
        self.kube = KubernetesEngine(settings, instance=instance, kiosk=kiosk,
                                     start_url=start_url if start_url is not None else settings.browser_start_url)
        super().__init__(settings, self.kube, instance=instance)
