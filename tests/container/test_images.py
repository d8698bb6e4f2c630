"""The images and the compose file as a user meets them: the desktop image's HEALTHCHECK, the service
image serving ``/healthz`` hardened, and ``docker compose`` refusing to start without the API key."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.container.conftest import MakeBackend, docker_cli, docker_exec, unavailable

pytestmark = pytest.mark.docker

SERVICE_IMAGE = os.environ.get("DESKPILOT_TEST_SERVICE_IMAGE", "deskpilot:latest")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_desktop_image_healthcheck_reports_healthy(make_backend: MakeBackend, engine: Any) -> None:
    backend = make_backend()
    handle = await backend.acquire("sess-health", 1024, 768)
    cid = handle.extra["container"]
    health = json.loads(docker_cli("inspect", "--format", "{{json .Config.Healthcheck}}", cid))
    assert health["Test"][0] == "CMD" and health["Test"][-1].endswith("healthcheck.py")
    code, out = docker_exec(engine, cid, *health["Test"][1:])
    assert code == 0 and "healthz: 200" in out
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        status = docker_cli("inspect", "--format", "{{.State.Health.Status}}", cid).strip()
        if status == "healthy":
            break
        time.sleep(0.5)
    assert status == "healthy"
    await backend.release(handle)


def test_service_image_serves_healthz_as_non_root_with_a_read_only_root(engine: Any, tmp_path: Path) -> None:
    try:
        engine.images.get(SERVICE_IMAGE)
    except Exception:
        unavailable(f"the service image {SERVICE_IMAGE} is not built")
    port = free_port()
    container = engine.containers.run(
        SERVICE_IMAGE, detach=True, network_mode="host", read_only=True, tmpfs={"/tmp": "rw,size=64m"},
        cap_drop=["ALL"], security_opt=["no-new-privileges:true"], labels={"deskpilot.test": "service-image"},
        environment={"DESKPILOT_HOST": "127.0.0.1", "DESKPILOT_PORT": str(port)})
    try:
        deadline = time.monotonic() + 60
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            container.reload()
            assert container.status in ("created", "running"), container.logs(tail=30).decode(errors="replace")
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            body = r.json()
            break
        assert body.get("ok") is True, body
        # No key was given to this container, so the service says why tasks cannot run instead of failing.
        assert body.get("tasks_can_run") is False and "ANTHROPIC_API_KEY" in str(body.get("reason"))
        code, out = container.exec_run(["id", "-un"])
        assert code == 0 and out.decode().strip() == "deskpilot"
        # The image's own HEALTHCHECK command passes against the running service.
        test = container.attrs["Config"]["Healthcheck"]["Test"]
        assert test[0] == "CMD"
        code, out = container.exec_run(test[1:])
        assert code == 0, out.decode(errors="replace")
    finally:
        container.remove(force=True, v=True)


def _compose(*args: str, env: dict[str, str], env_file: Path) -> subprocess.CompletedProcess[str]:
    compose = shutil.which("docker-compose")
    if compose is None:
        unavailable("docker-compose is not installed")
    base = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    # An empty env file, so a developer's own .env cannot supply the key.
    return subprocess.run([str(compose), "--env-file", str(env_file), "-f", str(ROOT / "docker-compose.yml"), *args],
                          cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60)


@pytest.mark.usefixtures("engine")
def test_compose_file_is_valid_and_requires_the_api_key(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    ok = _compose("config", env={"ANTHROPIC_API_KEY": "sk-test"}, env_file=empty)
    assert ok.returncode == 0, ok.stderr
    config = ok.stdout
    assert "127.0.0.1:8000:8000" in config  # one port, on loopback unless DESKPILOT_BIND says otherwise
    assert "deskpilot-data" in config and "/var/run/docker.sock" in config
    assert "DESKPILOT_DESKTOP_BACKEND: docker" in config and "healthcheck" in config
    services = _compose("config", "--services", env={"ANTHROPIC_API_KEY": "sk-test"}, env_file=empty).stdout.split()
    assert sorted(services) == ["deskpilot", "desktop-image"]
    missing = _compose("config", env={}, env_file=empty)
    assert missing.returncode != 0
    assert "set ANTHROPIC_API_KEY in .env" in missing.stderr
