"""Pause, resume, cancel, follow-up messages and the session queue, through the REST API."""

from __future__ import annotations

import json
import time
from typing import Any

from agent.loop import INTERRUPTED_RUNNING
from tests.support.fake_messages import FakeMessages, Reply, Request, reply, text, tool_use
from tests.web.conftest import Service, events, wait_for, wait_status


def create(svc: Service, task: str, preset: str = "autonomous") -> str:
    with svc.client("alice") as c:
        r = c.post("/api/sessions", json={"task": task, "policy": {"preset": preset}})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def post(svc: Service, path: str, body: Any = None) -> Any:
    with svc.client("alice") as c:
        return c.post(path, json=body)


def has_event(svc: Service, sid: str, kind: str) -> bool:
    return any(e["type"] == kind for e in events(svc, sid))


def test_pause_holds_at_a_step_boundary_and_resume_goes_on(agent_service: Service) -> None:
    fake: FakeMessages = agent_service.extra["fake"]
    fake.script(reply(tool_use("bash", {"command": "sleep 1"})), reply(text("finished")))
    sid = create(agent_service, "pause me")
    wait_for(lambda: has_event(agent_service, sid, "tool_call"), 60)
    assert post(agent_service, f"/api/sessions/{sid}/pause").status_code == 200
    wait_status(agent_service, sid, "paused")
    time.sleep(1.5)  # the step in flight finished; no new model call while paused
    assert len(fake.requests) == 1
    assert wait_status(agent_service, sid, "paused")["status"] == "paused"
    assert post(agent_service, f"/api/sessions/{sid}/resume").status_code == 200
    assert wait_status(agent_service, sid, "succeeded", "failed")["status"] == "succeeded"
    assert len(fake.requests) == 2


def test_cancel_interrupts_a_long_action_and_frees_the_desktop(agent_service: Service) -> None:
    fake: FakeMessages = agent_service.extra["fake"]
    fake.script(reply(tool_use("bash", {"command": "sleep 60"})))
    sid = create(agent_service, "cancel me")
    wait_for(lambda: has_event(agent_service, sid, "tool_call"), 60)
    # The call event comes before the action is sent to the desktop; cancel once it really runs.
    runner = agent_service.app.state.runner
    wait_for(lambda: sid in runner.live and runner.live[sid].actions_started >= 1, 60)
    r = post(agent_service, f"/api/sessions/{sid}/cancel")
    assert r.status_code == 200, r.text
    final = wait_status(agent_service, sid, "cancelled", timeout=30)
    assert final["status"] == "cancelled"
    wait_for(lambda: sid not in agent_service.app.state.runner.live, 30)
    saved = json.loads((agent_service.settings.data_dir / "sessions" / sid / "history.json").read_text())
    timeline = events(agent_service, sid)
    use_id = next(e["data"]["id"] for e in timeline if e["type"] == "tool_call")
    assert f'"tool_use_id": "{use_id}"' in json.dumps(saved[-1])  # the saved history stays valid
    outcome = [e["data"] for e in timeline if e["type"] == "tool_result"]  # and the timeline shows the outcome
    assert [(d["id"], d["is_error"]) for d in outcome] == [(use_id, True)]
    answered = next(b for b in saved[-1]["content"] if b.get("tool_use_id") == use_id)
    assert outcome[0]["error"] == INTERRUPTED_RUNNING == answered["content"][0]["text"]
    assert post(agent_service, f"/api/sessions/{sid}/cancel").status_code == 409
    assert post(agent_service, f"/api/sessions/{sid}/pause").status_code == 409


def test_follow_up_messages_join_the_run_and_continue_a_finished_one(agent_service: Service) -> None:
    fake: FakeMessages = agent_service.extra["fake"]
    fake.script(reply(tool_use("bash", {"command": "sleep 1"})), reply(text("first answer")),
                reply(text("second answer")))
    sid = create(agent_service, "talk to me")
    wait_for(lambda: has_event(agent_service, sid, "tool_call"), 60)
    assert post(agent_service, f"/api/sessions/{sid}/messages", {"text": "also mention cats"}).status_code == 200
    done = wait_status(agent_service, sid, "succeeded", "failed")
    assert done["result"] == "first answer"
    assert "also mention cats" in json.dumps(fake.requests[1].body["messages"][-1])
    assert post(agent_service, f"/api/sessions/{sid}/messages", {"text": "and dogs?"}).status_code == 200
    wait_for(lambda: len(fake.requests) == 3, 90)
    again = wait_status(agent_service, sid, "succeeded", "failed")
    assert again["result"] == "second answer"
    sent = fake.requests[2].body["messages"]
    assert "talk to me" in json.dumps(sent[0]) and "and dogs?" in json.dumps(sent[-1])


def test_sessions_beyond_the_maximum_wait_in_the_queue(agent_service: Service) -> None:
    fake: FakeMessages = agent_service.extra["fake"]

    def model(req: Request) -> Reply:
        if any(m["role"] == "assistant" for m in req.body["messages"]):
            return reply(text("done"))
        return reply(tool_use("bash", {"command": "true"}))

    fake.script(*([model] * 6))
    ids = [create(agent_service, f"task {i}", preset="strict") for i in range(3)]  # max_sessions is 2
    first_two = [wait_status(agent_service, sid, "awaiting_approval") for sid in ids[:2]]
    assert wait_status(agent_service, ids[2], "queued")["status"] == "queued"
    assert len(agent_service.app.state.runner.live) == 2
    for card in first_two:
        r = post(agent_service, f"/api/sessions/{card['id']}/approvals/{card['pending_approval']['id']}",
                 {"decision": "reject"})
        assert r.status_code == 200
    card = wait_status(agent_service, ids[2], "awaiting_approval")["pending_approval"]
    post(agent_service, f"/api/sessions/{ids[2]}/approvals/{card['id']}", {"decision": "approve"})
    assert all(wait_status(agent_service, sid, "succeeded", "failed")["status"] == "succeeded" for sid in ids)
