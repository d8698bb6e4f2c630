"""Egress through the service (issue 11 item 1): a session's ``policy.network`` reaches its desktop's proxy,
a refusal shows up as an ``egress_blocked`` event, and one REST call allows the host for the running session
(kept in its policy and the audit log). The model's shell is the client; the blocked site exists only as a
name in the proxy's hosts map (``egress_hosts``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.support.egress_sites import Site, hosts_map, sites_in_thread
from tests.support.fake_messages import FakeMessages, reply, text, tool_use
from tests.support.ui_page import ui_page
from tests.web.conftest import Service, events, start_service, stop_service, wait_for, wait_status

pytestmark = pytest.mark.desktop  # real Xvfb and Chromium (the fast tier skips it)


@pytest.fixture
def egress_service(tmp_path: Path) -> Iterator[tuple[Service, Site]]:
    site = Site("blocked.test", "127.0.0.3")
    with sites_in_thread(site), FakeMessages() as fake:
        svc = start_service(tmp_path / "data", anthropic_base_url=fake.url, model="claude-opus-4-5",
                            thinking_budget_tokens=0, egress_allow=["allowed.test"], egress_deny=[],
                            egress_hosts=hosts_map(site))
        svc.extra["fake"] = fake
        try:
            yield svc, site
        finally:
            stop_service(svc)


def of_type(svc: Service, sid: str, kind: str, host: str = "blocked.test") -> list[dict[str, Any]]:
    """Events of ``kind`` about ``host`` (Chromium itself also knocks on other hosts, e.g. accounts.google.com,
    and is refused like anything else)."""
    return [e for e in events(svc, sid) if e["type"] == kind and e["data"].get("host") == host]


def test_a_blocked_host_is_an_event_and_one_call_allows_it(egress_service: tuple[Service, Site]) -> None:
    svc, site = egress_service
    fake: FakeMessages = svc.extra["fake"]
    # The model tries once, then keeps trying (bounded) until the user has allowed the host.
    retry = f"for i in $(seq 1 120); do curl -sf -m 5 {site.origin}/second && break; sleep 1; done"
    fake.script(reply(tool_use("bash", {"command": f"curl -s -m 30 -w ' %{{http_code}}' {site.origin}/first"})),
                reply(tool_use("bash", {"command": retry})), reply(text("Fetched it.")))
    with svc.client("alice") as c:
        r = c.post("/api/sessions", json={"task": "fetch the page", "policy": {"preset": "autonomous",
                                          "network": {"allow": ["example.test"]}}})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        blocked = wait_for(lambda: of_type(svc, sid, "egress_blocked"), timeout=180)[0]["data"]
        assert blocked == {"host": "blocked.test", "port": site.port, "method": "GET",
                           "url": f"{site.origin}/first", "reason": "not_allowed"}
        assert site.hits == []
        # Someone else's session is not found; a bad name is a 422; then alice allows it.
        with svc.client("bob") as other:
            assert other.post(f"/api/sessions/{sid}/network/allow", json={"domain": "blocked.test"}).status_code == 404
        assert c.post(f"/api/sessions/{sid}/network/allow", json={"domain": "a b/c"}).status_code == 422
        r = c.post(f"/api/sessions/{sid}/network/allow", json={"domain": "Blocked.Test"})
        assert r.status_code == 200, r.text
        assert r.json() == {"host": "blocked.test"}
    final = wait_status(svc, sid, "succeeded", "failed", timeout=240)
    assert final["status"] == "succeeded", final
    assert "GET /second" in site.hits and "GET /first" not in site.hits
    results = [e for e in events(svc, sid) if e["type"] == "tool_result"]
    assert results[0]["data"]["output"].strip().endswith("403")
    assert "blocked.test /second" in results[1]["data"]["output"]
    assert [e["data"] for e in of_type(svc, sid, "egress_allowed")] == [{"host": "blocked.test", "by": "alice"}]
    # Kept in the session's policy (a resumed run starts with it) and in the audit log.
    row = svc.call(svc.app.state.store.get_session(sid))
    assert row.policy["network"] == {"allow": ["example.test", "blocked.test"]}
    audit = svc.call(svc.app.state.store.list_audit("alice", session_id=sid))
    assert [(a.action, a.actor, a.detail) for a in audit] == [("egress.allow", "alice", {"host": "blocked.test"})]
    # The session is over: nothing left to change.
    with svc.client("alice") as c:
        assert c.post(f"/api/sessions/{sid}/network/allow", json={"domain": "x.test"}).status_code == 409


def test_bad_network_policies_are_refused_at_creation(egress_service: tuple[Service, Site]) -> None:
    svc, _ = egress_service
    with svc.client("alice") as c:
        for network in ({"allow": "x.test"}, {"allow": ["ex*ample.test"]}, {"deny": ["300.1.1.1/8"]}, {"other": []}):
            r = c.post("/api/sessions", json={"task": "t", "policy": {"network": network}})
            assert r.status_code == 422, (network, r.text)


def test_the_timeline_card_allows_the_host_in_one_click(egress_service: tuple[Service, Site]) -> None:
    svc, site = egress_service
    fake: FakeMessages = svc.extra["fake"]
    retry = f"for i in $(seq 1 120); do curl -sf -m 5 {site.origin}/after-click && break; sleep 1; done"
    fake.script(reply(tool_use("bash", {"command": f"curl -s -m 30 {site.origin}/first"})),
                reply(tool_use("bash", {"command": retry})), reply(text("Fetched it.")))
    with ui_page() as page:
        page.goto(svc.url + "/")
        page.fill("#login-token", svc.tokens["alice"])
        page.click("#login-form button")
        page.fill("#task", "fetch the page")
        page.select_option("#preset", "autonomous")
        page.click("#new-task button")
        card = page.locator("#timeline li.egress_blocked", has_text="blocked.test")
        expect(card).to_be_visible(timeout=120_000)
        card.locator("button.egress-allow").click()
        expect(card.locator(".egress-note")).to_have_text(" allowed blocked.test", timeout=30_000)
        expect(page.locator("#timeline li.egress_allowed")).to_contain_text("alice allowed blocked.test")
        expect(page.locator("#s-status")).to_have_text("succeeded", timeout=180_000)
    assert "GET /after-click" in site.hits and "GET /first" not in site.hits
