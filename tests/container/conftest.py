"""Fixtures for the container tests: a real Docker engine and the desktop image built by
``scripts/setup-docker`` (image builds stay out of the test run).

Desktop containers use host networking here, only so the containerized browser can open the test
page this process serves on 127.0.0.1; the daemon itself is reached over a unix socket in a
per-desktop directory. Outside CI a missing engine or image skips these tests with the reason; in CI
(``CI=true``) it fails them, loudly.

``make_backend(warm_pool=0, start_url="about:blank", kiosk=True, **settings) -> DockerBackend``
    function-scoped factory; every backend it made is closed (its containers removed) afterwards.
``engine``  the ``docker`` SDK client.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Protocol

import docker
import docker.errors
import pytest

from deskpilot.settings import Settings
from desktop.backends.docker import LABEL_INSTANCE, LABEL_MANAGED, DockerBackend

IMAGE = os.environ.get("DESKPILOT_TEST_DOCKER_IMAGE", "deskpilot-desktop:latest")


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"container tests must run in CI, but {reason}; run scripts/setup-docker first",
                    pytrace=False)
    pytest.skip(f"{reason} (run scripts/setup-docker)")


@pytest.fixture(scope="session")
def engine() -> Iterator[Any]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        unavailable(f"no Docker engine is reachable ({exc})")
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        unavailable(f"the desktop image {IMAGE} is not built")
    yield client
    client.close()


@pytest.fixture
def run_root() -> Iterator[Path]:
    # Short, so the daemon's socket path stays far below the 108-byte limit of unix socket paths.
    path = Path(tempfile.mkdtemp(prefix="dpc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def container_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": data_dir, "docker_image": IMAGE, "docker_network": "host",
                              "docker_warm_pool": 0, "desktop_start_timeout_s": 90}
    values.update(overrides)
    return Settings(**values)


class MakeBackend(Protocol):
    def __call__(self, warm_pool: int = 0, start_url: str = "about:blank", kiosk: bool = True,
                 **overrides: Any) -> DockerBackend: ...


@pytest.fixture
async def make_backend(engine: Any, run_root: Path) -> AsyncIterator[MakeBackend]:
    made: list[DockerBackend] = []

    def factory(warm_pool: int = 0, start_url: str = "about:blank", kiosk: bool = True,
                **overrides: Any) -> DockerBackend:
        settings = container_settings(run_root, docker_warm_pool=warm_pool, **overrides)
        backend = DockerBackend(settings, start_url=start_url, kiosk=kiosk, engine=engine)
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        await backend.aclose()
    # Whatever a failed test left behind in this run directory (only ours: the instance label).
    for backend in made:
        for c in engine.containers.list(all=True, filters={"label": [f"{LABEL_MANAGED}=1",
                                                                      f"{LABEL_INSTANCE}={backend.instance}"]}):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)


def docker_exec(engine: Any, container_id: str, *cmd: str, user: str | None = None) -> tuple[int, str]:
    """Run a command inside a desktop container; (exit code, output)."""
    kw: dict[str, Any] = {"user": user} if user else {}
    code, out = engine.containers.get(container_id).exec_run(list(cmd), demux=False, **kw)
    return int(code), (out or b"").decode(errors="replace")


def docker_cli(*args: str) -> str:
    """The docker CLI, for the parts the tests check the way an operator would (``docker inspect``)."""
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True, timeout=60).stdout
