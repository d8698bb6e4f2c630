"""The Kubernetes backend making real desktops: the real kr8s client talks to the local API server
(tests/support/fake_kube.py), whose kubelet runs each pod it is given as a Docker container of the desktop
image with the pod's security context, volumes and limits (tests/support/docker_kubelet.py), on a bridge
network this test creates, reporting the container's address as the pod IP. So the pod spec the backend
writes is what runs: non-root, no capabilities, read-only root, the token as a secret file, the daemon on
TCP at the pod IP. What a real cluster adds (scheduling, the CNI, NetworkPolicy enforcement, gVisor, the real
agent-sandbox controller) is not run here: docs/kubernetes.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest

from deskpilot.errors import DesktopLostError
from deskpilot.settings import Settings
from desktop.backends.kubernetes import KubernetesBackend
from desktop.egress_policy import NetworkPolicy
from tests.container.conftest import IMAGE
from tests.container.stack import run_task
from tests.support.docker_kubelet import LABEL, DockerKubelet
from tests.support.fake_kube import SANDBOX_GV, FakeKube
from tests.support.fake_messages import FakeMessages, Request, reply, text, tool_use
from tests.support.loopback_site import LoopbackSite
from tests.web.conftest import make_tokens
from tests.web.procs import ServerProcess
from tests.web.test_restart import model_env

pytestmark = pytest.mark.docker


@pytest.fixture
def cluster(engine: Any, tmp_path: Path) -> Iterator[tuple[FakeKube, Path, str]]:
    """The fake API server with its Docker kubelet, a kubeconfig, and this host's address on the pods' network
    (where "the service's pod", this process, listens for the desktops' egress proxies)."""
    network = engine.networks.create(f"dpk-{secrets.token_hex(4)}", driver="bridge", internal=True)
    kube = FakeKube()
    kube.kubelet = DockerKubelet(engine, network.name, lambda ns, name: kube.objects["v1", "secrets", ns, name])
    kube.start()
    try:
        network.reload()
        yield kube, kube.write_kubeconfig(tmp_path / "kubeconfig"), network.attrs["IPAM"]["Config"][0]["Gateway"]
    finally:
        kube.close()
        for container in engine.containers.list(all=True, filters={"label": f"{LABEL}=fake-kube"}):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        with contextlib.suppress(docker.errors.APIError):
            network.remove()


def settings_for(kubeconfig: Path, tmp_path: Path, gateway: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "desktop_backend": "kubernetes", "docker_image": IMAGE,
                              "kubernetes_kubeconfig": kubeconfig, "desktop_start_timeout_s": 90,
                              "kubernetes_proxy_host": gateway,
                              "replica_id": f"test-{secrets.token_hex(3)}", **overrides}
    return Settings(**values)


async def test_a_pod_becomes_a_hardened_desktop_reached_over_tcp_and_the_warm_pool_refills(
        cluster: tuple[FakeKube, Path, str], engine: Any, tmp_path: Path) -> None:
    kube, kubeconfig, gateway = cluster
    site = LoopbackSite(lambda path, query: (b"hello from the site", "text/plain"))
    port = site.url("/").split(":")[2].rstrip("/")
    backend = KubernetesBackend(settings_for(kubeconfig, tmp_path, gateway, kubernetes_warm_pool=1,
                                             egress_hosts={"allowed.test": "127.0.0.1", "other.test": "127.0.0.1"}))
    try:
        await backend.wait_pool_ready(within_s=240)
        (warm,) = backend.pool_names()
        handle = await backend.acquire("sess-k8s", 1024, 768)
        assert handle.extra["pod"] == warm  # the warm desktop served the session...
        await backend.wait_pool_ready(within_s=240)
        assert backend.pool_names() != [warm]  # ...and a new one took its place in the pool
        assert len(kube.list("v1", "pods")) == 2

        pod = kube.objects["v1", "pods", "desktops", warm]
        ip = kube.kubelet.status(pod)["podIP"] if kube.kubelet else None
        assert handle.client.base_url == f"http://{ip}:7000"
        shot = await handle.client.screenshot()
        assert shot.image is not None and shot.image.startswith(b"\x89PNG"), shot.error
        # Non-root with no capabilities, a read-only root, the token a read-only file (not in the environment).
        bash = await handle.client.tool("bash", {"command": (
            "id -u; grep CapEff /proc/self/status; touch /usr/x 2>&1 | tail -1; echo w > /tmp/w && echo TMP-OK; "
            "env | grep -c TOKEN; ls -l /var/run/secrets/deskpilot/token")})
        out = (bash.output or "").splitlines()
        assert out[0] == "1000" and out[1].split() == ["CapEff:", "0000000000000000"], bash
        assert "Read-only file system" in out[2] and out[3] == "TMP-OK" and out[4] == "0", bash
        assert out[5].startswith("-r--r-----"), bash
        container = engine.containers.list(filters={"label": f"pod-uid={pod['metadata']['uid']}"})[0]
        host = container.attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"] and not host["PortBindings"]

        # Egress through the session's proxy in this process (the service's pod), with the session's policy.
        assert handle.egress is not None and handle.egress.clients == frozenset({ip})
        handle.egress.set_policy(NetworkPolicy.from_lists(["allowed.test"], []))
        fetched = await handle.client.tool("bash", {"command": (
            "python3 -c 'import sys, urllib.request as u, urllib.error as e\n"
            "for h in sys.argv[1:]:\n"
            " try: print(h, u.urlopen(f\"http://{h}:" + port + "/\", timeout=20).read().decode())\n"
            " except e.HTTPError as x: print(h, x.code)' allowed.test other.test")})
        assert (fetched.output or "").splitlines() == ["allowed.test hello from the site", "other.test 403"], fetched
        assert [b.host for b in handle.egress.blocked] == ["other.test"]
        # The proxy serves its desktop's address alone: another client on the network gets nothing.
        reader, writer = await asyncio.open_connection(gateway, handle.egress.listen_port)
        writer.write(f"GET http://allowed.test:{port}/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n".encode())
        assert await _answer(reader) == b""
        writer.close()

        # The pod removed behind the backend's back: the session learns its desktop is lost, and why.
        assert kube.route("DELETE", f"/api/v1/namespaces/desktops/pods/{warm}", {}, b"")[0] == 200
        with pytest.raises(DesktopLostError, match=f"Pod {warm} was removed"):
            await handle.client.screenshot()
        await backend.release(handle)  # still removes what is left (its token Secret, its proxy)
        assert not handle.egress.running
        assert warm not in [p["metadata"]["name"] for p in kube.list("v1", "pods")]
        assert [s["metadata"]["name"] for s in kube.list("v1", "secrets")] == [f"{backend.pool_names()[0]}-token"]
    finally:
        await backend.aclose()
        site.close()
    assert kube.list("v1", "pods") == [] and kube.list("v1", "secrets") == []
    assert kube.list("networking.k8s.io/v1", "networkpolicies") == []


async def test_a_claim_on_the_agent_sandbox_warm_pool_becomes_a_desktop(
        cluster: tuple[FakeKube, Path, str], tmp_path: Path) -> None:
    kube, kubeconfig, gateway = cluster
    kube.sandbox_crds = True
    backend = KubernetesBackend(settings_for(kubeconfig, tmp_path, gateway, kubernetes_warm_pool=1))
    try:
        await backend.start()
        (warm,) = [p["metadata"]["name"] for p in kube.list("v1", "pods")]  # started by the pool's controller
        handle = await backend.acquire("sess-claim", 1024, 768)
        (claim,) = kube.list(SANDBOX_GV, "sandboxclaims")
        assert claim["status"]["sandbox"]["name"] == warm  # adopted from the warm pool
        shot = await handle.client.screenshot()
        assert shot.image is not None, shot.error
        await backend.release(handle)
        assert kube.list(SANDBOX_GV, "sandboxclaims") == []
        assert warm not in [p["metadata"]["name"] for p in kube.list("v1", "pods")]
    finally:
        await backend.aclose()
    assert kube.list("v1", "pods") == [] and kube.list(SANDBOX_GV, "sandboxwarmpools") == []


def test_the_service_runs_a_task_end_to_end_on_a_kubernetes_desktop(
        cluster: tuple[FakeKube, Path, str], tmp_path: Path) -> None:
    """``deskpilot serve`` with the kubernetes backend (a subprocess, as deployed), the fake Messages API."""
    kube, kubeconfig, gateway = cluster
    data = tmp_path / "service"
    token = make_tokens(data, ["alice"])["alice"]
    with FakeMessages() as fake:
        fake.script(reply(text("Looking."), tool_use("computer", {"action": "screenshot"})),
                    reply(text("Checking who I am."), tool_use("bash", {"command": "id -u"})),
                    lambda req: reply(text(f"Done: {_last_tool_output(req)}")))
        env = model_env(fake, DESKPILOT_DESKTOP_BACKEND="kubernetes", DESKPILOT_DOCKER_IMAGE=IMAGE,
                        DESKPILOT_KUBERNETES_KUBECONFIG=str(kubeconfig), DESKPILOT_KUBERNETES_WARM_POOL="0",
                        DESKPILOT_REPLICA_ID="service-e2e", DESKPILOT_DESKTOP_START_TIMEOUT_S="90",
                        DESKPILOT_KUBERNETES_PROXY_HOST=gateway)
        server = ServerProcess(data, env).start()
        try:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
                final = run_task(c, "look, then say who you are")
            assert final["status"] == "succeeded", final.get("error")
            assert len(fake.requests[1].images) == 1  # the screenshot came from the pod's desktop
            # The pod's non-root user ran the command (its output, as the service wraps it for the model).
            assert "1000" in _last_tool_output(fake.requests[2]).split()
            (pod,) = [o for o in kube.created if o["kind"] == "Pod"]
            assert pod["metadata"]["annotations"]["deskpilot.session"] == final["id"]
        finally:
            server.stop()
    assert kube.list("v1", "pods") == [] and kube.list("v1", "secrets") == []


def _last_tool_output(req: Request) -> str:
    (result,) = [b for b in req.body["messages"][-1]["content"] if b.get("type") == "tool_result"]
    content = result["content"]
    return "".join(b.get("text", "") for b in content).strip() if isinstance(content, list) else str(content)


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """Everything the other end sent before closing (a reset, since our request went unread: nothing)."""
    try:
        return await asyncio.wait_for(reader.read(), 30)
    except ConnectionResetError:
        return b""
