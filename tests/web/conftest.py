"""A real uvicorn server on 127.0.0.1 serving ``create_app`` in a thread, with real SQLite in tmp_path
(or the PostgreSQL database ``DESKPILOT_DATABASE_URL`` names; ``pg_cluster`` starts a throwaway one).

``fake_service``: the service with a fake Messages API and the fake desktop backend (tests/support/fake_desktop.py),
no X: the fast tier's control-flow tests. ``agent_service``: the same with real local desktops (marked ``desktop``).
``crash_and_restart(svc, backend)``: a crash, then a fresh service on the same data."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from deskpilot.settings import Settings
from desktop.backends.base import DesktopBackend
from tests.support.fake_desktop import FakeBackend
from tests.support.fake_messages import FakeMessages
from tests.support.shared_dir import desktop_writable_dir
from tests.web.pg import PgCluster, cluster_for_tests
from web.app import create_app
from web.auth import create_token
from web.store import Store

# One TLS context for every test client: building one loads the CA bundle (~40 ms of CPU), and the tests make
# a client for nearly every request they send (all plain http on loopback, so it is never even used).
TLS = ssl.create_default_context()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tokens(data_dir: Path, names: list[str], url: str | None = None) -> dict[str, str]:
    """Tokens in the database the service will use: ``url``, else ``DESKPILOT_DATABASE_URL``, else SQLite."""

    async def go() -> dict[str, str]:
        store = Store(data_dir, url or os.environ.get("DESKPILOT_DATABASE_URL"))
        await store.init()
        try:
            return {name: await create_token(store, name) for name in names}
        finally:
            await store.close()

    return asyncio.run(go())


@dataclass
class Service:
    url: str
    settings: Settings
    tokens: dict[str, str]
    app: Any = None
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    frozen: list[tuple[uvicorn.Server, threading.Thread, threading.Event]] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def client(self, who: str | None = "alice", **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=TLS, **kw)

    def call(self, coro: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the server's own event loop (e.g. the runner's real ``emit``)."""
        return asyncio.run_coroutine_threadsafe(coro, self.app.state.loop).result(timeout)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def start_service(data_dir: Path, backend: DesktopBackend | None = None, **overrides: Any) -> Service:
    values: dict[str, Any] = {"data_dir": data_dir, "host": "127.0.0.1", "port": free_port(),
                              "anthropic_api_key": "sk-test-not-a-real-key", "max_sessions": 2,
                              # never the real API: a closed loopback port unless a test brings a fake
                              "anthropic_base_url": "http://127.0.0.1:9"}
    values.update(overrides)
    settings = Settings(**values)
    return serve(settings, make_tokens(data_dir, ["alice", "bob"], settings.database_url), backend)


def serve(settings: Settings, tokens: dict[str, str], backend: DesktopBackend | None = None) -> Service:
    app = create_app(settings, first_token=False, backend=backend)
    config = uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_config=None, ws_per_message_deflate=False,
                            ws_max_size=settings.ws_max_message_bytes, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return Service(f"http://127.0.0.1:{settings.port}", settings, tokens, app, server, thread)


def stop_service(service: Service) -> None:
    hung = False  # asserted after the frozen ones are stopped below: a shutdown that hangs is a bug, not slowness
    if service.server is not None and service.thread is not None:
        service.server.should_exit = True
        service.thread.join(timeout=30)
        hung = service.thread.is_alive()
    # Services frozen by crash_and_restart last: thawed only now, their shutdown touches nothing a test reads.
    for server, thread, thaw in service.frozen:
        thaw.set()
        server.should_exit = True
        thread.join(timeout=30)
    service.frozen.clear()
    assert not hung, "the service did not shut down within 30 s"


def crash_and_restart(service: Service, backend: DesktopBackend | None = None) -> None:
    """Crash ``service`` and start a new one on the same data directory and tokens, in place (new URL and app).

    The crash freezes the old service's event loop: from then on it runs no code at all, as after a SIGKILL
    (its database rows and files stay as they were; no shutdown code runs). Call it only while the service
    is quiet (sessions waiting for an approval or a held action, no request in flight), so no transaction
    is left open. ``stop_service`` thaws and stops the frozen one at the end. (tests/web/test_restart.py
    SIGKILLs a real process; this is the fast tier's in-process equivalent.)
    """
    assert service.server is not None and service.thread is not None
    reached, thaw = threading.Event(), threading.Event()

    def freeze() -> None:
        reached.set()
        thaw.wait()

    service.app.state.loop.call_soon_threadsafe(freeze)
    if not reached.wait(30):
        raise RuntimeError("the service's event loop did not stop")
    service.frozen.append((service.server, service.thread, thaw))
    again = serve(service.settings.model_copy(update={"port": free_port()}), service.tokens, backend)
    service.url, service.settings = again.url, again.settings
    service.app, service.server, service.thread = again.app, again.server, again.thread


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster for the session (tests/web/pg.py); ``create_database()`` per test."""
    yield from cluster_for_tests()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str | None:
    """Each backend in turn: None = the default SQLite file in the data dir; else a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = start_service(tmp_path / "data")
    try:
        yield svc
    finally:
        stop_service(svc)


def wait_for(fn: Any, timeout: float = 60, interval: float = 0.1) -> Any:
    """Poll ``fn`` until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting; last value: {last!r}")


def wait_status(svc: Service, sid: str, *states: str, who: str = "alice", timeout: float = 90) -> dict[str, Any]:
    with svc.client(who) as c:
        seen: list[dict[str, Any]] = []

        def check() -> dict[str, Any] | None:
            body: dict[str, Any] = c.get(f"/api/sessions/{sid}").json()
            seen[:] = [body]
            return body if body["status"] in states else None

        try:
            result: dict[str, Any] = wait_for(check, timeout)
        except AssertionError:
            raise AssertionError(f"session never reached {states}: {seen}") from None
        return result


def events(svc: Service, sid: str, who: str = "alice", after: int = 0) -> list[dict[str, Any]]:
    with svc.client(who) as c:
        items: list[dict[str, Any]] = c.get(f"/api/sessions/{sid}/events", params={"after": after}).json()["items"]
        return items


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory the model's shell may write to: it runs as the desktop's sandbox uid, which cannot enter
    ``tmp_path`` (tests/support/shared_dir.py)."""
    with desktop_writable_dir() as path:
        yield path


@pytest.fixture
def fake_service(tmp_path: Path) -> Iterator[Service]:
    """The service wired to a fake Messages API (``extra["fake"]``) and the fake desktop backend
    (``extra["desktops"]``, a ``FakeBackend``): no display, no browser."""
    desktops = FakeBackend()
    with FakeMessages() as fake:
        svc = start_service(tmp_path / "data", desktops, anthropic_base_url=fake.url, model="claude-opus-4-5",
                            thinking_budget_tokens=0)
        svc.extra.update(fake=fake, desktops=desktops)
        try:
            yield svc
        finally:
            stop_service(svc)


@pytest.fixture
def agent_service(tmp_path: Path) -> Iterator[Service]:
    """The service wired to a fake Messages API (``extra["fake"]``) and real local desktops."""
    with FakeMessages() as fake:
        svc = start_service(tmp_path / "data", anthropic_base_url=fake.url, model="claude-opus-4-5",
                            thinking_budget_tokens=0)
        svc.extra["fake"] = fake
        try:
            yield svc
        finally:
            stop_service(svc)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A store on a fresh SQLite file (tests/web/test_store_backends.py has its own, on either database)."""
    s = Store(tmp_path)
    await s.init()
    yield s
    await s.close()
