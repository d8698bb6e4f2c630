"""Whole runs through the service: real SDK → fake Messages API, real SQLite; on the fake desktop and on
real local desktops."""

from __future__ import annotations

import httpx
import pytest

from tests.support.fake_messages import FakeMessages, reply, text, tool_use
from tests.web.conftest import Service, events, wait_status


@pytest.fixture(params=["fake_service", pytest.param("agent_service", marks=pytest.mark.desktop)])
def any_service(request: pytest.FixtureRequest) -> Service:
    svc: Service = request.getfixturevalue(request.param)
    return svc


def test_a_task_runs_to_the_end_with_events_screenshots_and_usage(any_service: Service) -> None:
    agent_service = any_service
    fake: FakeMessages = agent_service.extra["fake"]
    fake.script(
        reply(text("Let me look at the screen."), tool_use("computer", {"action": "screenshot"})),
        reply(text("All done: the screen is blank.")),
    )
    with agent_service.client("alice") as c:
        body = {"task": "look at the screen", "policy": {"preset": "autonomous"}}
        sid = c.post("/api/sessions", json=body).json()["id"]
    final = wait_status(agent_service, sid, "succeeded", "failed")
    assert final["status"] == "succeeded", final
    assert final["result"] == "All done: the screen is blank."
    assert final["usage"]["input_tokens"] == 2000 and final["usage"]["output_tokens"] == 100
    assert final["usage"]["cost_usd"] > 0
    evs = events(agent_service, sid)
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    kinds = [e["type"] for e in evs]
    assert [e["data"]["status"] for e in evs if e["type"] == "status"][:3] == ["queued", "starting", "running"]
    assert kinds.index("tool_call") < kinds.index("tool_result")
    result = next(e for e in evs if e["type"] == "tool_result")
    assert result["data"]["is_error"] is False and result["image"]
    with agent_service.client("alice") as c:
        shot = c.get(f"/api/sessions/{sid}/screenshots/{result['image']}")
    assert shot.status_code == 200 and shot.content.startswith(b"\x89PNG")
    with agent_service.client("bob") as c:
        assert c.get(f"/api/sessions/{sid}/screenshots/{result['image']}").status_code == 404
    # the model saw the screenshot
    assert len(fake.requests) == 2 and len(fake.requests[1].images) == 1
    assert httpx.get(agent_service.url + "/healthz").json()["ok"] is True
    with agent_service.client("alice") as c:
        metrics = c.get("/metrics").text
    assert 'deskpilot_events_total{type="tool_call"}' in metrics and "deskpilot_sessions_live" in metrics
