"""``docker-compose up -d`` for real (``tests/container/stack.py``: the repository's compose file, unchanged):
the service container (non-root, read-only, no capabilities) on the stack's own bridge network, its port
published on 127.0.0.1, starts a desktop container per session with no network and reaches it over the
same-path socket directory, runs tasks against the fake Messages API, and ``down -v`` leaves nothing behind:
no container (the desktops included), no network, no volume, no desktop directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import docker.errors
import httpx
import pytest

from tests.container.stack import (
    API_KEY,
    MODEL,
    PROJECT_LABEL,
    Stack,
    compose_stack,
    first_token,
    healthy,
    networks_named,
    run_task,
    volumes_named,
)
from tests.support.fake_messages import Reply, Request, reply, text, tool_use
from tests.web.conftest import wait_for

pytestmark = pytest.mark.docker


@pytest.fixture
def stack(engine: Any) -> Iterator[Stack]:
    with compose_stack(engine) as s:
        yield s


def test_compose_up_runs_a_task_in_a_desktop_on_the_stacks_network_and_down_leaves_nothing(
        stack: Stack, engine: Any) -> None:
    up = stack.run("up", "-d", "--no-build")
    assert up.returncode == 0, up.stderr[-3000:]
    service = engine.containers.get(stack.service_container)
    health = healthy(stack.url)
    assert health["tasks_can_run"] is True, health

    # The service: hardened, on the stack's bridge network only, published on loopback only.
    service.reload()
    host_config = service.attrs["HostConfig"]
    assert service.attrs["Config"]["User"] == "deskpilot" and host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"] and host_config["NetworkMode"] == stack.network
    assert set(service.attrs["NetworkSettings"]["Networks"]) == {stack.network}
    assert [b["HostIp"] for b in host_config["PortBindings"]["8000/tcp"]] == ["127.0.0.1"]
    assert engine.networks.get(stack.network).attrs["Driver"] == "bridge"
    token = first_token(service)

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
        final = run_task(c, "look")
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
        # No network at all: the session's egress proxy socket in the run directory is the only way out.
        assert d.attrs["HostConfig"]["NetworkMode"] == "none"
        assert set(d.attrs["NetworkSettings"]["Networks"]) <= {"none"}
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
    assert networks_named(engine, stack.network) == [] and volumes_named(engine, stack.volume) == []
    assert list(stack.run_dir.iterdir()) == []
