"""``docker-compose up -d`` for real, with the repository's ``docker-compose.yml`` unchanged: the service
container (non-root, read-only, no capabilities) on the stack's own bridge network, its port published on
127.0.0.1, starts a desktop container per session on that network and reaches it over the same-path socket
directory, runs a task against the fake Messages API, and ``down -v`` leaves nothing behind: no container
(the desktops included), no network, no volume, no desktop directory.

The fake runs in this process on loopback. One extra compose service from a test-only override file, a
relay on the stack's network, makes it reachable as ``http://fake-messages:8080`` through a unix socket in
a bind-mounted directory (``tests/container/relay.py``), so no host network is involved. The images come
from ``scripts/setup-docker`` (``--no-build``: a test never rebuilds them).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest
import yaml  # type: ignore[import-untyped]

from desktop.backends.docker import LABEL_INSTANCE, LABEL_MANAGED, instance_id
from tests.container.conftest import IMAGE, unavailable
from tests.container.relay import Relay
from tests.container.test_images import ROOT, SERVICE_IMAGE, free_port
from tests.support.fake_messages import FakeMessages, Reply, Request, reply, text, tool_use
from tests.web.conftest import wait_for

pytestmark = pytest.mark.docker

API_KEY = "sk-test-compose"
MODEL = "claude-opus-4-7"  # not the default, so the request shows DESKPILOT_MODEL was passed through
FAKE_URL = "http://fake-messages:8080"
PROJECT_LABEL = "com.docker.compose.project"


@dataclass
class Stack:
    project: str
    network: str
    url: str
    run_dir: Path
    fake: FakeMessages
    compose: list[str]
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.compose, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=120)

    @property
    def volume(self) -> str:
        return f"{self.project}_deskpilot-data"

    @property
    def desktop_labels(self) -> list[str]:
        # The service labels its desktops with the run directory it was given (the same path inside it).
        return [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={instance_id(self.run_dir)}"]


def _override(relay_dir: Path) -> dict[str, Any]:
    """The test's only addition to the stack: the relay to the fake, on the stack's network."""
    return {"services": {"fake-messages": {
        "image": SERVICE_IMAGE,
        # tini as PID 1, so the relay stops on SIGTERM instead of waiting for down's timeout.
        "entrypoint": ["/usr/bin/tini", "--", "/opt/deskpilot/bin/python", "/opt/relay/relay.py", "tcp:0.0.0.0:8080",
                       "unix:/relay/fake.sock"],
        "volumes": [f"{ROOT / 'tests/container'}:/opt/relay:ro", f"{relay_dir}:/relay:ro"],
        "networks": ["desktops"],
        "read_only": True, "cap_drop": ["ALL"], "healthcheck": {"disable": True}, "restart": "no"}}}


@pytest.fixture
def stack(engine: Any) -> Iterator[Stack]:
    compose = shutil.which("docker-compose")
    if compose is None:
        unavailable("docker-compose is not installed")
    assert compose is not None
    for image in (SERVICE_IMAGE, IMAGE):
        try:
            engine.images.get(image)
        except docker.errors.ImageNotFound:
            unavailable(f"the image {image} is not built")
    work = Path(tempfile.mkdtemp(prefix="dpk-", dir="/tmp"))
    relay_dir = work / "relay"
    relay_dir.mkdir(mode=0o755)
    (work / "empty.env").write_text("")  # so a developer's own .env plays no part
    (work / "override.yml").write_text(yaml.safe_dump(_override(relay_dir)))
    project = f"dpk{secrets.token_hex(4)}"
    port = free_port()
    with FakeMessages(api_key=API_KEY) as fake, Relay(f"unix:{relay_dir}/fake.sock", "tcp:" + fake.url.split("//")[1]):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DESKPILOT_", "ANTHROPIC_", "COMPOSE_"))}
        env.update({"DESKPILOT_SERVICE_IMAGE": SERVICE_IMAGE, "DESKPILOT_DOCKER_IMAGE": IMAGE,
                    "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": FAKE_URL, "DESKPILOT_MODEL": MODEL,
                    "DESKPILOT_BIND": "127.0.0.1", "DESKPILOT_PORT": str(port),
                    "DESKPILOT_DOCKER_NETWORK": f"{project}-net", "DESKPILOT_DOCKER_WARM_POOL": "0",
                    "DESKPILOT_RUN_DIR": str(work / "run"),
                    "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid)})
        s = Stack(project, f"{project}-net", f"http://127.0.0.1:{port}", work / "run", fake,
                  [compose, "--env-file", str(work / "empty.env"), "-p", project,
                   "-f", str(ROOT / "docker-compose.yml"), "-f", str(work / "override.yml")], env)
        try:
            yield s
        finally:
            s.run("down", "-v", "--timeout", "20")
            _remove_leftovers(engine, s)
            shutil.rmtree(work, ignore_errors=True)


def _remove_leftovers(engine: Any, s: Stack) -> None:
    """After a failed test: whatever ``down`` did not remove (the test itself asserts there is nothing)."""
    for filters in ({"label": f"{PROJECT_LABEL}={s.project}"}, {"label": s.desktop_labels}):
        for c in engine.containers.list(all=True, filters=filters):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True, v=True)
    for name, collection in ((s.network, engine.networks), (s.volume, engine.volumes)):
        with contextlib.suppress(docker.errors.NotFound):
            collection.get(name).remove()


def test_compose_up_runs_a_task_in_a_desktop_on_the_stacks_network_and_down_leaves_nothing(
        stack: Stack, engine: Any) -> None:
    up = stack.run("up", "-d", "--no-build")
    assert up.returncode == 0, up.stderr[-3000:]
    service = engine.containers.get(f"{stack.project}_deskpilot_1")
    health = wait_for(lambda: _healthz(stack.url), timeout=90, interval=0.5)
    assert health["tasks_can_run"] is True, health

    # The service: hardened, on the stack's bridge network only, published on loopback only.
    service.reload()
    host_config = service.attrs["HostConfig"]
    assert service.attrs["Config"]["User"] == "deskpilot" and host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"] and host_config["NetworkMode"] == stack.network
    assert set(service.attrs["NetworkSettings"]["Networks"]) == {stack.network}
    assert [b["HostIp"] for b in host_config["PortBindings"]["8000/tcp"]] == ["127.0.0.1"]
    assert engine.networks.get(stack.network).attrs["Driver"] == "bridge"
    # The first token is printed once in the service's log.
    token = wait_for(lambda: re.findall(r"dp_[A-Za-z0-9_-]{20,}", service.logs().decode()), timeout=30)[0]

    desktops: dict[str, Any] = {}
    noted: list[Request] = []

    def note_desktops(then: Reply) -> Callable[[Request], Reply]:
        def responder(request: Request) -> Reply:
            # Looked up while the session's desktop certainly runs: its screenshot is in this request.
            running = engine.containers.list(filters={"label": stack.desktop_labels})
            desktops.update({d.id: d for d in running})
            noted.append(request)
            return then
        return responder

    screenshot = reply(text("Looking."), tool_use("computer", {"action": "screenshot"}))
    # One task runs to the end; a second one is still waiting for the model when the stack goes down.
    stack.fake.script(screenshot, note_desktops(reply(text("Seen it."))),
                      screenshot, note_desktops(reply(text("Too late."), delay_s=600)))
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        final = _run_task(c, "look")
        assert final["status"] == "succeeded", final.get("error")
        # Released at its end: its container and its socket directory are gone.
        wait_for(lambda: not engine.containers.list(all=True, filters={"label": stack.desktop_labels})
                 and not any(stack.run_dir.iterdir()), timeout=30, interval=0.2)
        r = c.post("/api/sessions", json={"task": "hold", "policy": {"preset": "autonomous"}})
        assert r.status_code == 201, r.text
        wait_for(lambda: len(noted) == 2, timeout=90, interval=0.2)  # the second task's desktop is noted
    # The service's model settings arrived (key, base URL and model passed through by the compose file),
    # and the screenshots came from desktop containers.
    assert {(r.api_key, r.body["model"]) for r in stack.fake.requests} == {(API_KEY, MODEL)}
    assert [len(r.images) for r in stack.fake.requests] == [0, 1, 0, 1]

    assert len(desktops) == 2, "the service did not start one desktop container per session"
    for d in desktops.values():
        assert d.attrs["HostConfig"]["NetworkMode"] == stack.network
        assert set(d.attrs["NetworkSettings"]["Networks"]) == {stack.network}
        assert d.attrs["HostConfig"]["CapDrop"] == ["ALL"] and d.attrs["HostConfig"]["ReadonlyRootfs"] is True
        assert not d.attrs["HostConfig"]["PortBindings"]
        assert API_KEY not in str(d.attrs["Config"]["Env"])
    assert engine.containers.list(filters={"label": stack.desktop_labels}), "the second desktop is not running"

    down = stack.run("down", "-v", "--timeout", "20")
    assert down.returncode == 0, down.stderr[-3000:]
    # Nothing left: the stack's containers, the desktop in use (the service removes it as it stops), the
    # network, the volume, the desktop's socket directory.
    assert engine.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={stack.project}"}) == []
    assert engine.containers.list(all=True, filters={"label": stack.desktop_labels}) == []
    for cid in desktops:
        with pytest.raises(docker.errors.NotFound):
            engine.containers.get(cid)
    # (The engine's name filters match substrings, so compare names.)
    assert [n.name for n in engine.networks.list(names=[stack.network]) if n.name == stack.network] == []
    assert [v.name for v in engine.volumes.list(filters={"name": stack.volume}) if v.name == stack.volume] == []
    assert list(stack.run_dir.iterdir()) == []


def _run_task(c: httpx.Client, task: str) -> dict[str, Any]:
    r = c.post("/api/sessions", json={"task": task, "policy": {"preset": "autonomous"}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = c.get(f"/api/sessions/{sid}").json()
        return body if body["status"] in ("succeeded", "failed", "paused", "cancelled") else None

    result: dict[str, Any] = wait_for(finished, timeout=90, interval=0.5)
    return result


def _healthz(url: str) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = httpx.get(url + "/healthz", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if body.get("ok") else None
