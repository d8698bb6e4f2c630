"""Issue 11 §6: a hostile approval policy over REST is refused with a 422 and a message, never a 500."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.fake_messages import FakeMessages, reply, text, tool_use
from tests.web.conftest import Service, events, wait_status


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"rules": [{"effect": "ask", "window": "("}]}, "window pattern '(' is not a valid RE2 regular"),
        ({"rules": [{"effect": "ask", "text": "(?<=a)b"}]}, "look-around and backreferences are not supported"),
        ({"rules": [{"effect": "ask", "text": "(?s)a.{900}b"}]}, "too complex"),
        ({"rules": [{"effect": "ask", "text": "a" * 5000}]}, "5000 characters; at most 500"),
        ({"rules": [{"effect": "deny", "tool": "bash"}] * 1000}, "1000 rules; at most 100"),
        ({"rules": [{"effect": "ask", "text": ["x"]}]}, "rule text must be a string, not list"),
        ({"rules": "everything"}, "policy rules must be a list"),
        ({"preset": "yolo"}, "unknown approval preset 'yolo'"),
    ],
)
def test_a_bad_policy_is_a_422_with_a_clear_message(service: Service, policy: object, message: str) -> None:
    with service.client("alice") as c:
        r = c.post("/api/sessions", json={"task": "x", "policy": policy})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["ok"] is False and body["error"].startswith("invalid policy: ")
        assert message in body["error"]
        assert "Traceback" not in r.text
        assert c.get("/api/sessions").json()["total"] == 0  # nothing was created
    assert httpx.get(service.url + "/healthz").status_code == 200


def test_a_catastrophic_pattern_does_not_freeze_the_service(agent_service: Service) -> None:
    """The issue's attack: ``(.*)*Z`` rules, checked on every tool call, against a long command and the real
    window title. With Python's ``re`` this run (and every other request) would hang for hours."""
    fake: FakeMessages = agent_service.extra["fake"]
    command = "echo " + "a" * 5000
    fake.script(reply(tool_use("bash", {"command": command})), reply(text("Done.")))
    policy = {"preset": "autonomous", "rules": [{"effect": "deny", "text": "(.*)*Z"},
                                                {"effect": "ask", "window": "(.*)*Z"}]}
    with agent_service.client("alice") as c:
        r = c.post("/api/sessions", json={"task": "echo", "policy": policy})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        slowest = 0.0
        deadline = time.monotonic() + 120
        while c.get(f"/api/sessions/{sid}").json()["status"] not in ("succeeded", "failed"):
            started = time.monotonic()
            assert httpx.get(agent_service.url + "/healthz", timeout=30).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            assert time.monotonic() < deadline, "the run did not finish"
            time.sleep(0.05)
    final = wait_status(agent_service, sid, "succeeded", "failed")
    assert final["status"] == "succeeded", final
    results = [e for e in events(agent_service, sid) if e["type"] == "tool_result"]
    assert len(results) == 1 and not results[0]["data"].get("is_error"), results
    assert slowest < 5, slowest  # generous under load; the attack made it hours
