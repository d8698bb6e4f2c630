"""A local Kubernetes API server speaking the real REST wire format, for what the Kubernetes backend uses.

No API server can run on these machines, so the real kr8s client is pointed at this one through a kubeconfig
(``write_kubeconfig``). It serves version and discovery (``/version``, ``/api``, ``/api/v1``, ``/apis``,
``/apis/<group>/<version>``), and create / get / list (``labelSelector``: ``k=v``, ``k!=v``, ``k``, ``!k``) /
delete of pods, secrets and networkpolicies, plus the agent-sandbox kinds (``extensions.agents.x-k8s.io/
v1beta1``: sandboxtemplates, sandboxwarmpools, sandboxclaims) when ``sandbox_crds`` is on. Errors are
``Status`` objects with the API's reasons (NotFound, AlreadyExists, Invalid, Forbidden).

``kubelet``: optional; it runs a created pod for real (``DockerKubelet``: a container of the pod's image with
its security context, volumes and limits on a network the test created) and reports the pod's IP and phase.
Without one, pods stay ``Pending`` with no IP. ``sandbox_crds`` adds a minimal controller: a SandboxWarmPool
keeps ``replicas`` unclaimed pods from its template, a SandboxClaim adopts one (or has one started) and
reports its IPs; deleting the claim deletes its pod. (The real controller goes through ``Sandbox`` objects;
this one skips them: the backend never reads them.)

``fail(method, path_pattern, code, times=1)`` makes matching requests answer an error; ``requests`` logs
every request as ``(method, path, query)``; ``created`` keeps every object as it was created.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

SANDBOX_GROUP = "extensions.agents.x-k8s.io"
SANDBOX_GV = f"{SANDBOX_GROUP}/v1beta1"
# (group/version, plural) -> kind
KINDS = {("v1", "pods"): "Pod", ("v1", "secrets"): "Secret",
         ("networking.k8s.io/v1", "networkpolicies"): "NetworkPolicy",
         (SANDBOX_GV, "sandboxtemplates"): "SandboxTemplate", (SANDBOX_GV, "sandboxwarmpools"): "SandboxWarmPool",
         (SANDBOX_GV, "sandboxclaims"): "SandboxClaim"}
_PATH = re.compile(r"^/(?:api/(?P<core>v1)|apis/(?P<gv>[^/]+/[^/]+))/namespaces/(?P<ns>[^/]+)/(?P<res>[^/]+)"
                   r"(?:/(?P<name>[^/]+))?$")


class Kubelet(Protocol):
    def run(self, pod: dict[str, Any]) -> None:
        """Start the pod (asynchronously is fine)."""

    def status(self, pod: dict[str, Any]) -> dict[str, Any]:
        """The pod's current ``status``."""

    def stop(self, pod: dict[str, Any]) -> None: ...


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    code: int
    times: int


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class FakeKube:
    def __init__(self, *, kubelet: Kubelet | None = None, sandbox_crds: bool = False) -> None:
        self.kubelet = kubelet
        self.sandbox_crds = sandbox_crds
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}  # (gv, plural, ns, name) -> object
        self.requests: list[tuple[str, str, str]] = []
        self.created: list[dict[str, Any]] = []  # every object as created, including ones deleted since
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._version = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        # serve_forever's poll interval is how long close() waits for it (0.5 s by default, in every test).
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeKube:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self.kubelet is not None:
            for pod in self.list("v1", "pods"):
                self.kubelet.stop(pod)

    def write_kubeconfig(self, path: Path, namespace: str = "desktops") -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }))
        return path

    def fail(self, method: str, path_pattern: str, code: int, times: int = 1) -> None:
        with self._lock:
            self._faults.append(_Fault(method, re.compile(path_pattern), code, times))

    # --- the store, for tests -------------------------------------------------------------------------

    def list(self, gv: str, plural: str, selector: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [o for (g, p, _, _), o in self.objects.items()
                    if (g, p) == (gv, plural) and selector_matches(selector, o["metadata"].get("labels", {}))]

    def put(self, gv: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object directly (as another client would have)."""
        code, body = self._create(gv, plural, obj["metadata"].get("namespace", "desktops"), obj)
        assert code == 201, body
        return body

    # --- HTTP -----------------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        kube = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                path = parts.path.rstrip("/") or "/"
                kube.requests.append((method, path, parts.query))
                if self.headers.get("Authorization") != "Bearer fake-token":
                    self._answer(401, status(401, "Unauthorized", "Unauthorized"))
                    return
                code, body = kube.route(method, path, parse_qs(parts.query), raw)
                self._answer(code, body)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

        return Handler

    def route(self, method: str, path: str, query: dict[str, list[str]], raw: bytes) -> tuple[int, dict[str, Any]]:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.method == method and fault.pattern.search(path):
                    fault.times -= 1
                    reason = {403: "Forbidden", 409: "AlreadyExists", 422: "Invalid"}.get(fault.code,
                                                                                       "InternalError")
                    return fault.code, status(fault.code, reason, f"injected {fault.code} for {method} {path}")
        if method == "GET" and (found := self._discovery(path)) is not None:
            return found
        match = _PATH.match(path)
        if match is None:
            return 404, status(404, "NotFound", f"the server could not find the requested resource ({path})")
        gv, plural, ns, name = match["core"] or match["gv"], match["res"], match["ns"], match["name"]
        if (gv, plural) not in KINDS or (gv == SANDBOX_GV and not self.sandbox_crds):
            return 404, status(404, "NotFound", f"the server could not find the requested resource ({path})")
        if method == "POST" and name is None:
            try:
                body = json.loads(raw)
            except ValueError:
                return 400, status(400, "BadRequest", "the request body is not JSON")
            return self._create(gv, plural, ns, body)
        if method == "GET" and name is None:
            selector = query.get("labelSelector", [""])[0]
            items = [self._current(o) for o in self.list(gv, plural, selector) if o["metadata"]["namespace"] == ns]
            return 200, {"kind": f"{KINDS[gv, plural]}List", "apiVersion": gv,
                         "metadata": {"resourceVersion": str(self._version)}, "items": items}
        with self._lock:
            obj = self.objects.get((gv, plural, ns, name or ""))
        if obj is None:
            return 404, status(404, "NotFound", f'{plural} "{name}" not found')
        if method == "GET":
            return 200, self._current(obj)
        if method == "DELETE":
            self._delete(gv, plural, ns, obj)
            return 200, obj
        return 405, status(405, "MethodNotAllowed", f"{method} is not supported here")

    def _discovery(self, path: str) -> tuple[int, dict[str, Any]] | None:
        groups = {"networking.k8s.io": "networking.k8s.io/v1", **({SANDBOX_GROUP: SANDBOX_GV}
                                                                  if self.sandbox_crds else {})}
        if path == "/version":
            return 200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "platform": "linux/amd64"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": name, "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                 "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}}
                for name, gv in groups.items()]}
        gv = path.removeprefix("/api/").removeprefix("/apis/")
        if path in ("/api/v1", *(f"/apis/{g}" for g in groups.values())):
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
                {"name": plural, "singularName": kind.lower(), "namespaced": True, "kind": kind,
                 "verbs": ["create", "delete", "get", "list"]}
                for (g, plural), kind in KINDS.items() if g == gv]}
        return None

    # --- objects --------------------------------------------------------------------------------------

    def _create(self, gv: str, plural: str, ns: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        kind = KINDS[gv, plural]
        meta = body.get("metadata") or {}
        name = meta.get("name") or ""
        if body.get("kind") != kind or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) or len(name) > 253:
            return 422, status(422, "Invalid", f'{kind} "{name}" is invalid: kind or metadata.name')
        if meta.get("namespace", ns) != ns:
            return 400, status(400, "BadRequest", "the namespace of the object does not match the request's")
        with self._lock:
            if (gv, plural, ns, name) in self.objects:
                return 409, status(409, "AlreadyExists", f'{plural} "{name}" already exists')
            self._version += 1
            obj = {**body, "metadata": {**meta, "namespace": ns, "uid": str(uuid.uuid4()),
                                        "resourceVersion": str(self._version),
                                        "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
            if kind == "Pod":
                obj["status"] = {"phase": "Pending"}
            self.objects[gv, plural, ns, name] = obj
            self.created.append(obj)
        if kind == "Pod" and self.kubelet is not None:
            self.kubelet.run(obj)
        if kind == "SandboxWarmPool":
            self._replenish(obj)
        if kind == "SandboxClaim":
            self._claim(obj)
        return 201, obj

    def _delete(self, gv: str, plural: str, ns: str, obj: dict[str, Any]) -> None:
        with self._lock:
            self.objects.pop((gv, plural, ns, obj["metadata"]["name"]), None)
        kind = KINDS[gv, plural]
        if kind == "Pod" and self.kubelet is not None:
            self.kubelet.stop(obj)
        if kind == "SandboxClaim" and (pod := obj.get("status", {}).get("sandbox", {}).get("name")):
            self._delete_named("v1", "pods", ns, pod)
        if kind == "SandboxWarmPool":
            for pod in self.list("v1", "pods", f"{POOL_LABEL}={obj['metadata']['name']}"):
                self._delete_named("v1", "pods", ns, pod["metadata"]["name"])

    def _delete_named(self, gv: str, plural: str, ns: str, name: str) -> None:
        with self._lock:
            obj = self.objects.get((gv, plural, ns, name))
        if obj is not None:
            self._delete(gv, plural, ns, obj)

    def _current(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj.get("kind") == "Pod" and self.kubelet is not None:
            obj["status"] = self.kubelet.status(obj)
        if obj.get("kind") == "SandboxClaim":
            pod_name = obj.get("status", {}).get("sandbox", {}).get("name")
            ns = obj["metadata"]["namespace"]
            with self._lock:
                pod = self.objects.get(("v1", "pods", ns, pod_name or ""))
            ip = self._current(pod).get("status", {}).get("podIP") if pod else None
            if pod_name:
                obj["status"] = {"sandbox": {"name": pod_name, "podIPs": [ip] if ip else []},
                                 "conditions": [{"type": "Ready", "status": "True" if ip else "False",
                                                 "reason": "DependenciesReady" if ip else "DependenciesNotReady"}]}
        return obj

    # --- the agent-sandbox controller, minimal --------------------------------------------------------

    def _template_pod(self, ns: str, template_name: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            template = self.objects[SANDBOX_GV, "sandboxtemplates", ns, template_name]
        pod_template = template["spec"]["podTemplate"]
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns,
                             "labels": {**pod_template.get("metadata", {}).get("labels", {}), **labels}},
                "spec": pod_template["spec"]}

    def _replenish(self, pool: dict[str, Any]) -> None:
        ns, name = pool["metadata"]["namespace"], pool["metadata"]["name"]
        idle = self.list("v1", "pods", f"{POOL_LABEL}={name}")
        for _ in range(pool["spec"].get("replicas", 0) - len(idle)):
            pod = self._template_pod(ns, pool["spec"]["sandboxTemplateRef"]["name"], f"{name}-{secrets.token_hex(3)}",
                                     {POOL_LABEL: name})
            self._create("v1", "pods", ns, pod)

    def _claim(self, claim: dict[str, Any]) -> None:
        ns, pool_name = claim["metadata"]["namespace"], claim["spec"]["warmPoolRef"]["name"]
        with self._lock:
            pool = self.objects.get((SANDBOX_GV, "sandboxwarmpools", ns, pool_name))
            idle = self.list("v1", "pods", f"{POOL_LABEL}={pool_name}")
            extra = claim["spec"].get("additionalPodMetadata", {}).get("labels", {})
            if idle:  # adopt: the pod leaves the pool and takes the claim's labels
                pod = idle[0]
                labels = {k: v for k, v in pod["metadata"]["labels"].items() if k != POOL_LABEL}
                pod["metadata"]["labels"] = {**labels, **extra, CLAIM_LABEL: claim["metadata"]["name"]}
                claim["status"] = {"sandbox": {"name": pod["metadata"]["name"], "podIPs": []}}
            elif pool is not None:
                claim["status"] = {"sandbox": {"name": claim["metadata"]["name"], "podIPs": []}}
        if pool is None:
            claim["status"] = {"conditions": [{"type": "Ready", "status": "False", "reason": "WarmPoolNotFound"}]}
            return
        if not idle:  # cold start from the pool's template
            template = pool["spec"]["sandboxTemplateRef"]["name"]
            self._create("v1", "pods", ns, self._template_pod(ns, template, claim["metadata"]["name"],
                                                              {**extra, CLAIM_LABEL: claim["metadata"]["name"]}))
        self._replenish(pool)


POOL_LABEL = "agents.x-k8s.io/warm-pool-sandbox"
CLAIM_LABEL = "agents.x-k8s.io/claim-name"


@contextmanager
def fake_kube(tmp_path: Path, *, kubelet: Kubelet | None = None, sandbox_crds: bool = False,
              namespace: str = "desktops") -> Iterator[tuple[FakeKube, Path]]:
    """A started fake API server and a kubeconfig naming it (namespace ``desktops``)."""
    kube = FakeKube(kubelet=kubelet, sandbox_crds=sandbox_crds).start()
    try:
        yield kube, kube.write_kubeconfig(tmp_path / "kubeconfig", namespace)
    finally:
        kube.close()


def secret_value(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()
