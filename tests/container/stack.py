"""A compose stack for the container tests: the repository's ``docker-compose.yml``, unchanged, under a unique
project name, plus one test-only service from an override file: a relay on the stack's network that makes
the fake Messages API (in this process, on loopback) reachable as ``http://fake-messages:8080`` through a
unix socket in a bind-mounted directory (``tests/container/relay.py``), so no host network is involved.
The images come from ``scripts/setup-docker`` (tests run ``up --no-build``: they never rebuild them).

``compose_stack(engine, service_env)`` yields a ``Stack``; on exit it runs ``down -v`` and removes whatever a
failed test left. ``service_env`` is added to the service's environment (e.g. another desktop backend).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import yaml  # type: ignore[import-untyped]

from desktop.backends.docker import LABEL_INSTANCE, LABEL_MANAGED, instance_id
from tests.container.conftest import IMAGE, unavailable
from tests.container.relay import Relay
from tests.container.test_images import ROOT, SERVICE_IMAGE, free_port
from tests.support.fake_messages import FakeMessages
from tests.web.conftest import wait_for

API_KEY = "sk-test-compose"
MODEL = "claude-opus-4-7"  # not the default, so the request shows DESKPILOT_MODEL was passed through
FAKE_URL = "http://fake-messages:8080"
PROJECT_LABEL = "com.docker.compose.project"


@dataclass
class Stack:
    """A running (or about to run) compose project; ``run("up", "-d", "--no-build")`` etc."""

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
    def service_container(self) -> str:
        return f"{self.project}_deskpilot_1"

    @property
    def desktop_labels(self) -> list[str]:
        # The service labels its desktops with the run directory it was given (the same path inside it).
        return [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={instance_id(self.run_dir)}"]


def _override(relay_dir: Path, service_env: dict[str, str]) -> dict[str, Any]:
    """The test's additions to the stack: the relay to the fake, on the stack's network; the service's extra env."""
    return {"services": {"deskpilot": {"environment": service_env}, "fake-messages": {
        "image": SERVICE_IMAGE,
        # tini as PID 1, so the relay stops on SIGTERM instead of waiting for down's timeout.
        "entrypoint": ["/usr/bin/tini", "--", "/opt/deskpilot/bin/python", "/opt/relay/relay.py", "tcp:0.0.0.0:8080",
                       "unix:/relay/fake.sock"],
        "volumes": [f"{ROOT / 'tests/container'}:/opt/relay:ro", f"{relay_dir}:/relay:ro"],
        "networks": ["desktops"],
        "read_only": True, "cap_drop": ["ALL"], "healthcheck": {"disable": True}, "restart": "no"}}}


@contextlib.contextmanager
def compose_stack(engine: Any, service_env: dict[str, str] | None = None) -> Iterator[Stack]:
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
    project = f"dpk{secrets.token_hex(4)}"
    extra = {k: v.format(project=project) for k, v in (service_env or {}).items()}
    (work / "override.yml").write_text(yaml.safe_dump(_override(relay_dir, extra)))
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


def healthy(url: str) -> dict[str, Any]:
    """The service's ``/healthz`` once it answers ok (published on loopback)."""

    def ok() -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = httpx.get(url + "/healthz", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return None
        return body if body.get("ok") else None

    result: dict[str, Any] = wait_for(ok, timeout=90, interval=0.5)
    return result


def first_token(container: Any) -> str:
    """The first API token, which the service prints once in its log."""
    found = wait_for(lambda: re.findall(r"dp_[A-Za-z0-9_-]{20,}", container.logs().decode()), timeout=30)
    return str(found[0])


def run_task(c: httpx.Client, task: str) -> dict[str, Any]:
    """Start a task (autonomous) and wait until it has finished; its final session body."""
    r = c.post("/api/sessions", json={"task": task, "policy": {"preset": "autonomous"}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = c.get(f"/api/sessions/{sid}").json()
        return body if body["status"] in ("succeeded", "failed", "paused", "cancelled") else None

    result: dict[str, Any] = wait_for(finished, timeout=90, interval=0.5)
    return result


def networks_named(engine: Any, name: str) -> list[Any]:
    """Exact-name lookup (the engine's name filters match substrings)."""
    return [n for n in engine.networks.list(names=[name]) if n.name == name]


def volumes_named(engine: Any, name: str) -> list[Any]:
    return [v for v in engine.volumes.list(filters={"name": name}) if v.name == name]
