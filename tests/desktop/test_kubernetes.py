"""The Kubernetes backend against a local API server speaking the real wire format (tests/support/fake_kube.py),
through the real kr8s client and a kubeconfig: what it asks the API for, and what it makes of bad answers.
No pod runs here (no kubelet): the desktop itself is tested in tests/container/test_kubernetes.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deskpilot.errors import ConfigError, DesktopStartError
from deskpilot.settings import Settings
from desktop.backends.cluster import LABEL_BACKEND
from desktop.backends.container import LABEL_DESKTOP, LABEL_INSTANCE, LABEL_MANAGED
from desktop.backends.kubernetes import KubernetesBackend
from tests.support.fake_kube import SANDBOX_GV, FakeKube, fake_kube, secret_value


def settings_for(kubeconfig: Path, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "desktop_backend": "kubernetes",
                              "kubernetes_kubeconfig": kubeconfig, "kubernetes_warm_pool": 0,
                              "desktop_start_timeout_s": 0.5, "replica_id": "replica-a",
                              "kubernetes_proxy_host": "127.0.0.1", **overrides}
    return Settings(**values)


def created(kube: FakeKube, kind: str) -> list[dict[str, Any]]:
    return [o for o in kube.created if o["kind"] == kind]


async def test_a_desktop_pod_is_hardened_and_its_token_is_a_secret_file(tmp_path: Path) -> None:
    with fake_kube(tmp_path) as (kube, kubeconfig):
        owner = kube.put("v1", "pods", {"apiVersion": "v1", "kind": "Pod",
                                        "metadata": {"name": "deskpilot-7d9f-x2", "namespace": "desktops"}})
        s = settings_for(kubeconfig, tmp_path, kubernetes_runtime_class="gvisor", kubernetes_cpu_request="250m",
                         kubernetes_memory_request="300Mi", docker_memory="1g", docker_cpus=1.5,
                         kubernetes_owner_pod="deskpilot-7d9f-x2")
        backend = KubernetesBackend(s)
        # No kubelet: the pod never gets an IP, so the desktop does not come up and is removed again.
        with pytest.raises(DesktopStartError, match="did not become healthy in time"):
            await backend.acquire("sess-1", 1024, 768)
        (pod,), (secret,) = created(kube, "Pod")[1:], created(kube, "Secret")
        assert kube.list("v1", "pods") == [owner] and kube.list("v1", "secrets") == []
        await backend.aclose()

    spec, (container,) = pod["spec"], pod["spec"]["containers"]
    ctx = container["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == 1000 and ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True and ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"} and ctx["privileged"] is False
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["runtimeClassName"] == "gvisor" and spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "300Mi"},
                                      "limits": {"cpu": "1500m", "memory": str(1024**3)}}
    # Writable: only the emptyDirs; the token: a read-only secret volume, never the environment.
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert {p for p, v in mounts.items() if "emptyDir" in v} == {"/tmp", "/home/deskpilot", "/dev/shm"}
    token_volume = mounts["/var/run/secrets/deskpilot"]
    assert token_volume["secret"]["secretName"] == secret["metadata"]["name"] == f"{pod['metadata']['name']}-token"
    assert len(secret_value(secret, "token")) >= 40 and secret["immutable"] is True
    assert not any("TOKEN" in e["name"] for e in container["env"])
    args = container["args"]
    assert args[:6] == ["--host", "0.0.0.0", "--port", "7000", "--private-network", "--token-file"]
    assert args[args.index("--width"):][:4] == ["--width", "1024", "--height", "768"]
    # Its egress proxy (in this process, the service's pod) on the pod IP given, in the policies' port range.
    host, _, port = args[args.index("--proxy") + 1].partition(":")
    assert host == "127.0.0.1" and 20000 <= int(port) <= 20999
    # Labels for orphan clean-up on both; the session id (any characters) as an annotation.
    for obj in (pod, secret):
        labels = obj["metadata"]["labels"]
        assert labels[LABEL_MANAGED] == "1" and labels[LABEL_BACKEND] == "kubernetes"
        assert labels[LABEL_INSTANCE] == backend.instance and labels[LABEL_DESKTOP]
        # Owned by the service's pod: Kubernetes removes them when that replica goes.
        assert obj["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": "deskpilot-7d9f-x2",
                                                       "uid": owner["metadata"]["uid"]}]
    assert pod["metadata"]["annotations"]["deskpilot.session"] == "sess-1"
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "desktop"


async def test_start_removes_only_this_instances_orphans_and_sets_up_the_network_policy(tmp_path: Path) -> None:
    with fake_kube(tmp_path) as (kube, kubeconfig):
        backend = KubernetesBackend(settings_for(kubeconfig, tmp_path))
        other = KubernetesBackend(settings_for(kubeconfig, tmp_path, replica_id="replica-b"))
        assert backend.instance != other.instance

        def leftover(name: str, instance: str, kind: str = "Pod") -> dict[str, Any]:
            labels = {LABEL_MANAGED: "1", LABEL_INSTANCE: instance, LABEL_BACKEND: "kubernetes",
                      LABEL_DESKTOP: name[-12:]}
            return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "desktops",
                                                                   "labels": labels}}

        kube.put("v1", "pods", leftover("deskpilot-mine-aaaaaaaaaaaa", backend.instance))
        kube.put("v1", "secrets", leftover("deskpilot-mine-aaaaaaaaaaaa-token", backend.instance, "Secret"))
        kube.put("v1", "pods", leftover("deskpilot-other-bbbbbbbbbbbb", other.instance))
        kube.put("v1", "pods", {"apiVersion": "v1", "kind": "Pod",
                                "metadata": {"name": "unrelated", "namespace": "desktops"}})
        await backend.start()
        assert sorted(p["metadata"]["name"] for p in kube.list("v1", "pods")) == \
            ["deskpilot-other-bbbbbbbbbbbb", "unrelated"]
        assert kube.list("v1", "secrets") == []
        # Removal went through a label selector naming this instance, and only desktops.
        selectors = [q for m, p, q in kube.requests if m == "GET" and p.endswith("/pods") and "labelSelector" in q]
        assert any(backend.instance in q and LABEL_DESKTOP in q for q in selectors)

        (policy,) = kube.list("networking.k8s.io/v1", "networkpolicies")
        spec = policy["spec"]
        assert spec["podSelector"]["matchLabels"][LABEL_INSTANCE] == backend.instance
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        (ingress,) = spec["ingress"]
        assert ingress["ports"] == [{"protocol": "TCP", "port": 7000}]
        assert ingress["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "deskpilot",
                                                                    "app.kubernetes.io/component": "service"}}}]
        # Out: only the service's pods, on the egress proxies' ports (no DNS, no address range).
        assert spec["egress"] == [{"to": ingress["from"], "ports": [{"protocol": "TCP", "port": 20000,
                                                                      "endPort": 20999}]}]
        await backend.aclose()
        assert kube.list("networking.k8s.io/v1", "networkpolicies") == []


async def test_with_direct_egress_desktops_reach_dns_and_the_allowed_ranges_and_get_no_proxy(tmp_path: Path) -> None:
    with fake_kube(tmp_path) as (kube, kubeconfig):
        backend = KubernetesBackend(settings_for(kubeconfig, tmp_path, kubernetes_egress="direct",
                                                 kubernetes_proxy_host=""))
        with pytest.raises(DesktopStartError):
            await backend.acquire("sess-1", 1024, 768)
        await backend.aclose()
        (pod,) = created(kube, "Pod")
        assert "--proxy" not in pod["spec"]["containers"][0]["args"]
        (policy,) = created(kube, "NetworkPolicy")
    dns, ranges = policy["spec"]["egress"]
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert ranges == {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"]}}]}


async def test_proxied_egress_without_this_pods_address_is_a_config_error(tmp_path: Path) -> None:
    with fake_kube(tmp_path) as (kube, kubeconfig):
        backend = KubernetesBackend(settings_for(kubeconfig, tmp_path, kubernetes_proxy_host=""))
        with pytest.raises(ConfigError, match="DESKPILOT_KUBERNETES_PROXY_HOST"):
            await backend.start()
        await backend.aclose()
        assert kube.created == []


@pytest.mark.parametrize(("method", "path", "code", "error", "message"), [
    ("GET", r"/pods$", 403, ConfigError, "refused to list desktop pods.*HTTP 403.*rbac.yaml"),
    ("POST", r"/networkpolicies$", 422, ConfigError, "rejected the request to create the desktops' NetworkPolicy"),
    ("POST", r"/secrets$", 500, DesktopStartError, "failed to create the token Secret.*HTTP 500"),
    ("POST", r"/pods$", 409, DesktopStartError, "could not create the desktop pod .*already exists"),
])
async def test_bad_api_answers_become_clear_errors_and_leave_nothing(
        tmp_path: Path, method: str, path: str, code: int, error: type[Exception], message: str) -> None:
    with fake_kube(tmp_path) as (kube, kubeconfig):
        kube.fail(method, path, code, times=4)  # kr8s itself retries a 403 three times (re-authenticating)
        backend = KubernetesBackend(settings_for(kubeconfig, tmp_path))
        with pytest.raises(error, match=message):
            await backend.acquire("sess-1", 1024, 768)
        await backend.aclose()
        assert kube.list("v1", "pods") == [] and kube.list("v1", "secrets") == []


async def test_an_owner_pod_outside_the_desktops_namespace_is_a_config_error(tmp_path: Path) -> None:
    with fake_kube(tmp_path) as (kube, kubeconfig):
        backend = KubernetesBackend(settings_for(kubeconfig, tmp_path, kubernetes_owner_pod="deskpilot-elsewhere"))
        with pytest.raises(ConfigError, match="no pod deskpilot-elsewhere in the desktops' namespace desktops"):
            await backend.start()
        await backend.aclose()
        assert kube.created == []


async def test_a_missing_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    backend = KubernetesBackend(Settings(data_dir=tmp_path, kubernetes_kubeconfig=tmp_path / "nope"))
    with pytest.raises(ConfigError, match="no usable Kubernetes configuration"):
        await backend.start()
    await backend.aclose()


async def test_with_the_agent_sandbox_crds_desktops_are_claims_on_the_instances_warm_pool(tmp_path: Path) -> None:
    with fake_kube(tmp_path, sandbox_crds=True) as (kube, kubeconfig):
        backend = KubernetesBackend(settings_for(kubeconfig, tmp_path, kubernetes_warm_pool=2))
        await backend.start()
        assert backend.kube.sandboxes and backend.cluster.pool_size() == 0  # the controller pools, not us
        (template,) = kube.list(SANDBOX_GV, "sandboxtemplates")
        (pool,) = kube.list(SANDBOX_GV, "sandboxwarmpools")
        assert pool["spec"] == {"replicas": 2, "sandboxTemplateRef": {"name": template["metadata"]["name"]}}
        pod_spec = template["spec"]["podTemplate"]["spec"]
        assert pod_spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        (secret,) = kube.list("v1", "secrets")
        assert pod_spec["volumes"][0]["secret"]["secretName"] == secret["metadata"]["name"]
        assert len(kube.list("v1", "pods")) == 2  # the fake controller's warm pods (no kubelet: never ready)

        with pytest.raises(DesktopStartError, match="did not become healthy"):
            await backend.acquire("sess-1", 1024, 768)
        (claim,) = created(kube, "SandboxClaim")
        assert claim["spec"]["warmPoolRef"] == {"name": pool["metadata"]["name"]}
        assert claim["metadata"]["labels"][LABEL_INSTANCE] == backend.instance
        assert claim["spec"]["additionalPodMetadata"]["labels"][LABEL_DESKTOP]
        assert kube.list(SANDBOX_GV, "sandboxclaims") == [] and created(kube, "Pod")[-1]["metadata"]["name"]
        assert not [p for p in created(kube, "Pod") if p["metadata"]["name"] == claim["metadata"]["name"]]
        assert "POST" not in {m for m, p, _ in kube.requests if p.endswith("/pods")}  # no raw pods

        await backend.aclose()
        assert kube.list(SANDBOX_GV, "sandboxwarmpools") == [] and kube.list(SANDBOX_GV, "sandboxtemplates") == []
        assert kube.list("v1", "secrets") == [] and kube.list("v1", "pods") == []


async def test_without_the_crds_or_with_them_turned_off_desktops_are_raw_pods(tmp_path: Path) -> None:
    with fake_kube(tmp_path, sandbox_crds=True) as (kube, kubeconfig):
        backend = KubernetesBackend(settings_for(kubeconfig, tmp_path, kubernetes_agent_sandbox="off"))
        await backend.start()
        assert not backend.kube.sandboxes and kube.list(SANDBOX_GV, "sandboxwarmpools") == []
        await backend.aclose()
    with fake_kube(tmp_path) as (kube, kubeconfig):
        backend = KubernetesBackend(settings_for(kubeconfig, tmp_path))
        await backend.start()
        assert not backend.kube.sandboxes
        assert ("GET", "/apis", "") in kube.requests  # it did look
        await backend.aclose()
    assert json.loads(kubeconfig.read_text())["clusters"][0]["cluster"]["server"].startswith("http://127.0.0.1:")
