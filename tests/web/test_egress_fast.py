"""The session side of egress without a display (fast tier): fake desktops, each with a real egress proxy as
the local backend gives it; the test itself plays the desktop's program (curl through that proxy).
tests/web/test_egress.py does the same with real desktops and the UI."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from deskpilot.settings import Settings
from desktop.backends.base import DesktopHandle
from desktop.egress_proxy import EgressProxy, start_proxy
from tests.support.egress_sites import Site, hosts_map, sites_in_thread
from tests.support.fake_desktop import FakeBackend, Match
from tests.support.fake_messages import FakeMessages, reply, text, tool_use
from tests.web.conftest import Service, events, start_service, stop_service, wait_for, wait_status


class ProxiedFakeBackend(FakeBackend):
    """Fake desktops, each with a real egress proxy (what ``LocalBackend`` adds to its desktops)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.proxies: dict[str, EgressProxy] = {}

    async def acquire(self, session_id: str, width: int, height: int) -> DesktopHandle:
        handle = await super().acquire(session_id, width, height)
        handle.egress = self.proxies[session_id] = await start_proxy(self.settings).start()
        return handle

    async def release(self, handle: DesktopHandle) -> None:
        await super().release(handle)
        if handle.egress is not None:
            await handle.egress.aclose()


def curl(proxy: EgressProxy, url: str) -> str:
    done = subprocess.run(["curl", "-s", "-m", "20", "-o", "/dev/null", "-w", "%{http_code}", "-x",
                           f"http://{proxy.address}", url], capture_output=True, text=True, timeout=60)
    return done.stdout


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[tuple[Service, Site, ProxiedFakeBackend]]:
    site = Site("blocked.test", "127.0.0.3")
    with sites_in_thread(site), FakeMessages() as fake:
        values = {"egress_allow": ["allowed.test"], "egress_deny": ["denied.test"], "egress_hosts": hosts_map(site)}
        desktops = ProxiedFakeBackend(Settings(data_dir=tmp_path / "data", **values))  # type: ignore[arg-type]
        service = start_service(tmp_path / "data", desktops, anthropic_base_url=fake.url, model="claude-opus-4-5",
                                thinking_budget_tokens=0, **values)
        service.extra["fake"] = fake
        try:
            yield service, site, desktops
        finally:
            stop_service(service)


def test_blocked_event_allow_call_and_the_policy_the_session_asked_for(
        svc: tuple[Service, Site, ProxiedFakeBackend]) -> None:
    service, site, desktops = svc
    held = desktops.block(Match("bash", "hold"))  # keeps the session running while the test plays the desktop
    fake: FakeMessages = service.extra["fake"]
    fake.script(reply(tool_use("bash", {"command": "hold"})), reply(text("done")))
    with service.client("alice") as c:
        r = c.post("/api/sessions", json={"task": "t", "policy": {"preset": "autonomous",
                                          "network": {"allow": ["other.test"], "deny": ["denied.test"]}}})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        wait_for(lambda: sid in desktops.proxies and desktops.commands(sid) == ["hold"], timeout=60)
        proxy = desktops.proxies[sid]
        assert proxy.policy.to_spec() == {"allow": ["other.test"], "deny": ["denied.test"]}  # the session's own
        assert curl(proxy, f"{site.origin}/one") == "403"
        blocked = wait_for(lambda: [e for e in events(service, sid) if e["type"] == "egress_blocked"], timeout=30)
        assert blocked[0]["data"] == {"host": "blocked.test", "port": site.port, "method": "GET",
                                      "url": f"{site.origin}/one", "reason": "not_allowed"}
        assert c.post(f"/api/sessions/{sid}/network/allow", json={"domain": "denied.test"}).status_code == 409
        assert c.post(f"/api/sessions/{sid}/network/allow", json={"domain": ""}).status_code == 422
        assert c.post(f"/api/sessions/{sid}/network/allow", json={"domain": "blocked.test"}).status_code == 200
        assert curl(proxy, f"{site.origin}/two") == "200"
        assert site.hits == ["GET /two"]
    held.release()
    assert wait_status(service, sid, "succeeded", "failed")["status"] == "succeeded"
    assert [e["data"] for e in events(service, sid) if e["type"] == "egress_allowed"] == [
        {"host": "blocked.test", "by": "alice"}]
    wait_for(lambda: not proxy.running, timeout=30)  # closed with its desktop
