"""Issue 11 §6: a hostile approval policy over REST is refused with a 422 and a message, never a 500."""

from __future__ import annotations

import httpx
import pytest

from tests.web.conftest import Service


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
