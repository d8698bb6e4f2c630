"""``docker compose up`` for real: the service container (non-root, read-only, no capabilities) starts a
desktop container per session through the mounted Docker socket and reaches it over the same-path socket
directory, runs a task against the fake Messages API, and ``down`` leaves no desktop behind.

The engine in CI has no bridge network, so the test runs a copy of ``docker-compose.yml`` changed in one
respect only: host networking (loopback addresses, no published port) instead of the port mapping.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]

from tests.container.conftest import unavailable
from tests.container.test_images import ROOT, free_port
from tests.support.fake_messages import FakeMessages, reply, text, tool_use
from tests.web.conftest import wait_for

pytestmark = pytest.mark.docker


@pytest.fixture
def compose_project(engine: Any) -> Iterator[dict[str, Any]]:
    compose = shutil.which("docker-compose")
    if compose is None:
        unavailable("docker-compose is not installed")
    for image in ("deskpilot:latest", "deskpilot-desktop:latest"):
        try:
            engine.images.get(image)
        except Exception:
            unavailable(f"the image {image} is not built")
    work = Path(tempfile.mkdtemp(prefix="dpk-", dir="/tmp"))
    port = free_port()
    with FakeMessages() as fake:
        spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        service = spec["services"]["deskpilot"]
        service.pop("ports")
        service["network_mode"] = "host"
        service["environment"].update({"DESKPILOT_HOST": "127.0.0.1", "DESKPILOT_PORT": str(port),
                                       "DESKPILOT_DOCKER_NETWORK": "host", "ANTHROPIC_BASE_URL": fake.url,
                                       "DESKPILOT_MODEL": "claude-opus-4-5",
                                       "DESKPILOT_THINKING_BUDGET_TOKENS": "0"})
        for svc in spec["services"].values():
            svc["build"]["context"] = str(ROOT)
        file = work / "compose.yml"
        file.write_text(yaml.safe_dump(spec))
        (work / "empty.env").write_text("")
        env = {**os.environ, "ANTHROPIC_API_KEY": "sk-test-compose", "DESKPILOT_RUN_DIR": str(work / "run"),
               "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid)}
        project = f"dpk{port}"
        base = [str(compose), "--env-file", str(work / "empty.env"), "-p", project, "-f", str(file)]

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*base, *args], env=env, capture_output=True, text=True, timeout=240)

        try:
            yield {"run": run, "url": f"http://127.0.0.1:{port}", "fake": fake, "project": project,
                   "run_dir": work / "run"}
        finally:
            run("down", "-v", "--timeout", "20")
            for c in engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"}):
                c.remove(force=True, v=True)
            shutil.rmtree(work, ignore_errors=True)


def test_compose_up_runs_a_session_in_a_desktop_container_and_down_removes_it(
        compose_project: dict[str, Any], engine: Any) -> None:
    run, url, fake = compose_project["run"], compose_project["url"], compose_project["fake"]
    up = run("up", "-d")
    assert up.returncode == 0, up.stderr[-2000:]
    service = engine.containers.get(f"{compose_project['project']}_deskpilot_1")
    health = wait_for(lambda: _healthz(url), timeout=120)
    assert health["tasks_can_run"] is True
    attrs = service.attrs
    assert attrs["Config"]["User"] == "deskpilot" and attrs["HostConfig"]["ReadonlyRootfs"] is True
    assert attrs["HostConfig"]["CapDrop"] == ["ALL"]
    # The first token is printed once in the service's log.
    token = wait_for(lambda: re.findall(r"dp_[A-Za-z0-9_-]{20,}", service.logs().decode()), timeout=30)[0]

    fake.script(reply(text("Looking."), tool_use("computer", {"action": "screenshot"})), reply(text("Seen it.")))
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        r = c.post("/api/sessions", json={"task": "look", "policy": {"preset": "autonomous"}})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]

        def finished() -> dict[str, Any] | None:
            body: dict[str, Any] = c.get(f"/api/sessions/{sid}").json()
            return body if body["status"] in ("succeeded", "failed", "paused") else None

        final = wait_for(finished, timeout=180)
    assert final["status"] == "succeeded", final.get("error")
    assert len(fake.requests[1].images) == 1  # the screenshot came from the desktop container
    # The service started its desktops (the session's and the warm pool's) as uid 1000, hardened.
    desktops = engine.containers.list(all=True, filters={"label": "deskpilot.managed=1"})
    mine = [d for d in desktops if str(compose_project["run_dir"]) in str(d.attrs["Mounts"])]
    assert mine, "no desktop container was started by the composed service"
    for d in mine:
        assert d.attrs["Config"]["User"] == "1000:1000" and d.attrs["HostConfig"]["CapDrop"] == ["ALL"]
        assert "sk-test-compose" not in str(d.attrs["Config"]["Env"])

    down = run("down", "-v", "--timeout", "20")
    assert down.returncode == 0, down.stderr[-2000:]
    for d in mine:
        wait_for(lambda d=d: _gone(engine, d.id), timeout=30)


def _healthz(url: str) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = httpx.get(url + "/healthz", timeout=2).json()
    except httpx.HTTPError:
        return None
    return body if body.get("ok") else None


def _gone(engine: Any, container_id: str) -> bool:
    try:
        engine.containers.get(container_id)
    except Exception:
        return True
    return False
