"""The Kubernetes objects of the Kubernetes desktop backend, as plain manifests (no API calls here).

A desktop Pod is the Docker backend's container (``desktop/backends/container.py``) translated, with what
Kubernetes adds: non-root (the image's user, uid 1000) with every capability dropped, no privilege
escalation, ``seccompProfile: RuntimeDefault``, a read-only root with ``emptyDir`` volumes for the writable
directories, resource requests and limits, an optional ``runtimeClassName`` (gVisor, Kata), no service account
token, no service links. Without CAP_SETUID the daemon cannot run the model's programs as a separate uid, so
it runs them as itself (``--sandbox off``; docs/kubernetes.md says what that costs).
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from docker.utils import parse_bytes

from deskpilot.settings import Settings
from desktop.backends.cluster import DAEMON_PORT, DesktopSpec
from desktop.backends.container import IMAGE_UID, WRITABLE_DIRS, desktop_command

TOKEN_DIR = "/var/run/secrets/deskpilot"  # noqa: S105  (a mount path, not a secret)
TOKEN_KEY = "token"  # noqa: S105
CONTAINER = "desktop"
# Every desktop pod carries these; the NetworkPolicies (the backend's and the manifests') select on them.
APP_LABELS = {"app.kubernetes.io/name": "deskpilot", "app.kubernetes.io/component": "desktop"}
# The image's entry point serves on a unix socket in a bind mount; here the daemon serves TCP instead.
_START = 'mkdir -p "$HOME" "$DESKPILOT_DATA_DIR" && exec deskpilot desktopd "$@"'


def _size_of(options: str) -> int | None:
    for option in options.split(","):
        key, _, value = option.partition("=")
        if key == "size":
            return int(parse_bytes(value))
    return None


def token_secret(name: str, token: str, labels: dict[str, str], namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()}}


def pod_spec(settings: Settings, *, width: int, height: int, secret_name: str, start_url: str,
             kiosk: bool = False, proxy: str | None = None) -> dict[str, Any]:
    """The ``spec`` of one desktop pod (also a SandboxTemplate's pod template)."""
    s = settings
    volumes: list[dict[str, Any]] = [
        {"name": "token", "secret": {"secretName": secret_name, "defaultMode": 0o440,
                                     "items": [{"key": TOKEN_KEY, "path": TOKEN_KEY}]}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(parse_bytes(s.docker_shm_size))}},
    ]
    mounts: list[dict[str, Any]] = [{"name": "token", "mountPath": TOKEN_DIR, "readOnly": True},
                                    {"name": "shm", "mountPath": "/dev/shm"}]  # noqa: S108
    for i, (path, options) in enumerate(sorted(WRITABLE_DIRS.items())):
        size = _size_of(options)
        volumes.append({"name": f"writable-{i}", "emptyDir": {"sizeLimit": str(size)} if size else {}})
        mounts.append({"name": f"writable-{i}", "mountPath": path})
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": s.docker_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/bin/tini", "--", "/bin/sh", "-c", _START, "desktopd"],
        "args": ["--host", "0.0.0.0", "--port", str(DAEMON_PORT), "--private-network",
                 "--token-file", f"{TOKEN_DIR}/{TOKEN_KEY}", "--sandbox", "off",
                 *(["--proxy", proxy] if proxy else []), *desktop_command(width, height, start_url, kiosk=kiosk)],
        # Only what the desktop needs: nothing inherited from the service (the model key stays there).
        "env": [{"name": "DESKPILOT_SCREEN_WIDTH", "value": str(width)},
                {"name": "DESKPILOT_SCREEN_HEIGHT", "value": str(height)},
                {"name": "DESKPILOT_LOG_FORMAT", "value": "json"}],
        "ports": [{"name": "daemon", "containerPort": DAEMON_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": s.kubernetes_cpu_request, "memory": s.kubernetes_memory_request},
            "limits": {"cpu": f"{round(s.docker_cpus * 1000)}m", "memory": str(parse_bytes(s.docker_memory))},
        },
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID,
            "allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "restartPolicy": "Never",  # a desktop that dies is reported lost, never silently replaced
        "terminationGracePeriodSeconds": 5,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False, "hostPID": False, "hostIPC": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID,
                            "fsGroup": IMAGE_UID, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if s.kubernetes_runtime_class:
        spec["runtimeClassName"] = s.kubernetes_runtime_class
    if s.kubernetes_node_selector:
        spec["nodeSelector"] = dict(s.kubernetes_node_selector)
    return spec


def desktop_pod(settings: Settings, spec: DesktopSpec, *, namespace: str, start_url: str, kiosk: bool,
                owner: list[dict[str, Any]]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": spec.name, "namespace": namespace, "labels": {**APP_LABELS, **spec.labels},
                                # Annotations take any session id; label values are limited to 63 plain chars.
                                "annotations": {"deskpilot.session": spec.session_id}}
    if owner:
        metadata["ownerReferences"] = owner
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": pod_spec(settings, width=spec.width, height=spec.height, secret_name=f"{spec.name}-token",
                             start_url=start_url, kiosk=kiosk, proxy=spec.proxy)}


def network_policy_spec(settings: Settings, desktops: dict[str, str], *, proxied: bool) -> dict[str, Any]:
    """Only the service's pods reach the daemon's port. Egress, ``proxied``: only the service's pods on the
    egress proxies' ports (the proxy resolves names; the desktop needs no DNS); else DNS and the allowed
    address ranges."""
    s = settings
    service = {"podSelector": {"matchLabels": dict(s.kubernetes_service_labels)}}
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": {**APP_LABELS, **desktops}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [service], "ports": [{"protocol": "TCP", "port": DAEMON_PORT}]}],
    }
    if proxied:
        spec["egress"] = [{"to": [service], "ports": [{"protocol": "TCP", "port": s.kubernetes_proxy_port_min,
                                                       "endPort": s.kubernetes_proxy_port_max}]}]
        return spec
    spec["egress"] = [
        {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
         "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"to": [{"ipBlock": {"cidr": cidr, "except": [e for e in s.kubernetes_egress_except if _within(e, cidr)]}}
                for cidr in s.kubernetes_egress_allow]},
    ]
    return spec


def _within(inner: str, outer: str) -> bool:
    """An ``except`` block must lie inside its ``cidr`` (the API rejects it otherwise)."""
    a, b = ipaddress.ip_network(inner, strict=False), ipaddress.ip_network(outer, strict=False)
    return a.version == b.version and a.subnet_of(b)  # type: ignore[arg-type]


# --- agent-sandbox (kubernetes-sigs/agent-sandbox, extensions.agents.x-k8s.io/v1beta1) ---------------------

SANDBOX_GROUP = "extensions.agents.x-k8s.io"
SANDBOX_VERSION = f"{SANDBOX_GROUP}/v1beta1"
SANDBOX_RESOURCES = {"sandboxtemplates", "sandboxwarmpools", "sandboxclaims"}


def sandbox_template(settings: Settings, *, name: str, namespace: str, labels: dict[str, str], secret_name: str,
                     start_url: str, kiosk: bool, owner: list[dict[str, Any]]) -> dict[str, Any]:
    """The pool's blueprint: the same pod; its network policy is the backend's own (``Unmanaged`` here)."""
    return {"apiVersion": SANDBOX_VERSION, "kind": "SandboxTemplate",
            "metadata": _metadata(name, namespace, labels, owner),
            "spec": {"podTemplate": {"metadata": {"labels": {**APP_LABELS, **labels}},
                                     "spec": pod_spec(settings, width=settings.screen_width,
                                                      height=settings.screen_height, secret_name=secret_name,
                                                      start_url=start_url, kiosk=kiosk)},
                     "networkPolicyManagement": "Unmanaged"}}


def sandbox_warm_pool(*, name: str, namespace: str, labels: dict[str, str], replicas: int,
                      owner: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": SANDBOX_VERSION, "kind": "SandboxWarmPool",
            "metadata": _metadata(name, namespace, labels, owner),
            "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": name}}}


def sandbox_claim(spec: DesktopSpec, *, pool: str, namespace: str, owner: list[dict[str, Any]]) -> dict[str, Any]:
    metadata = _metadata(spec.name, namespace, spec.labels, owner)
    metadata["annotations"] = {"deskpilot.session": spec.session_id}
    return {"apiVersion": SANDBOX_VERSION, "kind": "SandboxClaim", "metadata": metadata,
            "spec": {"warmPoolRef": {"name": pool}, "lifecycle": {"shutdownPolicy": "Delete"},
                     # The claimed pod gets the desktop's labels too: operators find it by them.
                     "additionalPodMetadata": {"labels": spec.labels}}}


def _metadata(name: str, namespace: str, labels: dict[str, str], owner: list[dict[str, Any]]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if owner:
        metadata["ownerReferences"] = owner
    return metadata
