"""URL-aware approval rules read the active tab's URL through the desktop the session holds (fast tier)."""

from __future__ import annotations

from typing import Any

from tests.support.fake_messages import FakeMessages, reply, text, tool_use
from tests.web.conftest import Service, events, wait_status


def run(svc: Service, policy: dict[str, Any]) -> str:
    with svc.client("alice") as c:
        r = c.post("/api/sessions", json={"task": "pay the bill", "policy": policy})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def test_a_url_rule_asks_only_on_the_matching_site(fake_service: Service) -> None:
    fake: FakeMessages = fake_service.extra["fake"]
    click = tool_use("computer", {"action": "left_click", "coordinate": [100, 100]})
    fake.script(reply(click), reply(text("clicked")), reply(click))
    policy = {"preset": "autonomous", "rules": [{"effect": "ask", "url": "(?i)bank"}]}

    elsewhere = run(fake_service, policy)  # the fake tab shows http://fake.test/: the rule does not match
    assert wait_status(fake_service, elsewhere, "succeeded")["result"] == "clicked"

    fake_service.extra["desktops"].tab_url = "https://mybank.test/pay"  # the next session's desktop
    on_bank = run(fake_service, policy)
    wait_status(fake_service, on_bank, "awaiting_approval")
    asked = [e for e in events(fake_service, on_bank) if e["type"] == "approval_requested"]
    assert len(asked) == 1 and asked[0]["data"]["tool"] == "computer"
