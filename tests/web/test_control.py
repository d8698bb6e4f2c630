"""Pause, resume, cancel, follow-up messages, the session queue and a lost desktop, through the REST API.

On the fake desktop (tests/support/fake_desktop.py): a held action stands for a long one, so every step is
deterministic. The real long ``sleep`` interrupted on a real desktop stays below, marked ``desktop``.
"""

from __future__ import annotations

import json
from typing import Any

from agent.loop import INTERRUPTED_RUNNING
from tests.support.fake_desktop import FakeBackend, Match
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


def statuses(svc: Service, sid: str) -> list[str]:
    return [e["data"]["status"] for e in events(svc, sid) if e["type"] == "status"]


def saved_history(svc: Service, sid: str) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = json.loads(
        (svc.settings.data_dir / "sessions" / sid / "history.json").read_text())
    return history


def test_pause_holds_at_a_step_boundary_and_resume_goes_on(fake_service: Service) -> None:
    fake: FakeMessages = fake_service.extra["fake"]
    desktops: FakeBackend = fake_service.extra["desktops"]
    held = desktops.block(Match("bash"))
    fake.script(reply(tool_use("bash", {"command": "make step"})), reply(text("finished")))
    sid = create(fake_service, "pause me")
    held.wait_started()
    assert post(fake_service, f"/api/sessions/{sid}/pause").status_code == 200
    assert wait_status(fake_service, sid, "paused")["status"] == "paused"  # asked for: the action still runs
    held.release()
    # The step in flight finishes; the loop stops at the boundary and says so, and asks the model nothing.
    wait_for(lambda: statuses(fake_service, sid)[-1:] == ["paused"] and has_event(fake_service, sid, "tool_result"))
    assert len(fake.requests) == 1 and desktops.commands(sid) == ["make step"]
    assert post(fake_service, f"/api/sessions/{sid}/pause").status_code == 200  # pausing twice is harmless
    assert post(fake_service, f"/api/sessions/{sid}/resume").status_code == 200
    assert wait_status(fake_service, sid, "succeeded", "failed")["status"] == "succeeded"
    assert len(fake.requests) == 2 and statuses(fake_service, sid)[-3:] == ["paused", "running", "succeeded"]
    assert post(fake_service, f"/api/sessions/{sid}/resume").status_code == 409


def test_cancel_interrupts_a_held_action_and_frees_the_desktop(fake_service: Service) -> None:
    fake: FakeMessages = fake_service.extra["fake"]
    desktops: FakeBackend = fake_service.extra["desktops"]
    held = desktops.block(Match("bash"))  # never released: only the cancel ends it
    fake.script(reply(tool_use("bash", {"command": "sleep 600"})))
    sid = create(fake_service, "cancel me")
    held.wait_started()
    r = post(fake_service, f"/api/sessions/{sid}/cancel")
    assert r.status_code == 200, r.text
    assert wait_status(fake_service, sid, "cancelled", timeout=30)["status"] == "cancelled"
    wait_for(lambda: sid not in fake_service.app.state.runner.live, 30)
    assert len(desktops) == 0 and desktops.desktop(sid).closed  # the desktop went back
    timeline = events(fake_service, sid)
    use_id = next(e["data"]["id"] for e in timeline if e["type"] == "tool_call")
    outcome = [e["data"] for e in timeline if e["type"] == "tool_result"]
    assert [(d["id"], d["is_error"], d["error"]) for d in outcome] == [(use_id, True, INTERRUPTED_RUNNING)]
    saved = saved_history(fake_service, sid)  # the saved history stays valid: the call is answered
    answered = next(b for b in saved[-1]["content"] if b.get("tool_use_id") == use_id)
    assert answered["content"][0]["text"] == INTERRUPTED_RUNNING
    assert post(fake_service, f"/api/sessions/{sid}/cancel").status_code == 409
    assert post(fake_service, f"/api/sessions/{sid}/pause").status_code == 409
    assert len(fake.requests) == 1


def test_cancel_while_queued_or_paused(fake_service: Service) -> None:
    fake: FakeMessages = fake_service.extra["fake"]
    desktops: FakeBackend = fake_service.extra["desktops"]
    held = desktops.block(Match("bash"))

    def model(req: Request) -> Reply:
        if any(m["role"] == "assistant" for m in req.body["messages"]):
            return reply(text("done"))
        return reply(tool_use("bash", {"command": "step"}))

    fake.script(*([model] * 3))
    busy = [create(fake_service, f"busy {i}") for i in range(2)]  # max_sessions is 2
    waiting = create(fake_service, "never starts")
    wait_for(lambda: len(held.held) == 2)
    assert wait_status(fake_service, waiting, "queued")["status"] == "queued"
    assert post(fake_service, f"/api/sessions/{waiting}/cancel").status_code == 200
    assert wait_status(fake_service, waiting, "cancelled")["status"] == "cancelled"
    assert post(fake_service, f"/api/sessions/{busy[0]}/pause").status_code == 200
    held.release()
    wait_for(lambda: statuses(fake_service, busy[0])[-1:] == ["paused"])
    assert post(fake_service, f"/api/sessions/{busy[0]}/cancel").status_code == 200
    assert wait_status(fake_service, busy[0], "cancelled")["status"] == "cancelled"
    assert wait_status(fake_service, busy[1], "succeeded", "failed")["status"] == "succeeded"
    assert sorted(d.session_id for d in desktops.desktops) == sorted(busy)  # the queued one never got a desktop


def test_follow_up_messages_join_the_run_and_continue_a_finished_one(fake_service: Service) -> None:
    fake: FakeMessages = fake_service.extra["fake"]
    held = fake_service.extra["desktops"].block(Match("bash"))
    fake.script(reply(tool_use("bash", {"command": "step"})), reply(text("first answer")),
                reply(text("second answer")))
    sid = create(fake_service, "talk to me")
    held.wait_started()
    assert post(fake_service, f"/api/sessions/{sid}/messages", {"text": "also mention cats"}).status_code == 200
    held.release()
    done = wait_status(fake_service, sid, "succeeded", "failed")
    assert done["result"] == "first answer"
    assert "also mention cats" in json.dumps(fake.requests[1].body["messages"][-1])
    assert post(fake_service, f"/api/sessions/{sid}/messages", {"text": "and dogs?"}).status_code == 200
    wait_for(lambda: len(fake.requests) == 3)
    again = wait_status(fake_service, sid, "succeeded", "failed")
    assert again["result"] == "second answer"
    sent = fake.requests[2].body["messages"]
    assert "talk to me" in json.dumps(sent[0]) and "and dogs?" in json.dumps(sent[-1])


def test_sessions_beyond_the_maximum_wait_in_the_queue(fake_service: Service) -> None:
    fake: FakeMessages = fake_service.extra["fake"]

    def model(req: Request) -> Reply:
        if any(m["role"] == "assistant" for m in req.body["messages"]):
            return reply(text("done"))
        return reply(tool_use("bash", {"command": "true"}))

    fake.script(*([model] * 6))
    ids = [create(fake_service, f"task {i}", preset="strict") for i in range(3)]  # max_sessions is 2
    first_two = [wait_status(fake_service, sid, "awaiting_approval") for sid in ids[:2]]
    assert wait_status(fake_service, ids[2], "queued")["status"] == "queued"
    assert len(fake_service.app.state.runner.live) == 2
    for card in first_two:
        r = post(fake_service, f"/api/sessions/{card['id']}/approvals/{card['pending_approval']['id']}",
                 {"decision": "reject"})
        assert r.status_code == 200
    card = wait_status(fake_service, ids[2], "awaiting_approval")["pending_approval"]
    post(fake_service, f"/api/sessions/{ids[2]}/approvals/{card['id']}", {"decision": "approve"})
    assert all(wait_status(fake_service, sid, "succeeded", "failed")["status"] == "succeeded" for sid in ids)
    desktops: FakeBackend = fake_service.extra["desktops"]
    assert desktops.commands() == ["true"] and desktops.calls[0].session_id == ids[2]  # only the approved one ran


def test_a_lost_desktop_fails_the_session_and_the_model_is_not_asked_again(fake_service: Service) -> None:
    fake: FakeMessages = fake_service.extra["fake"]
    desktops: FakeBackend = fake_service.extra["desktops"]
    held = desktops.block(Match("computer"))
    fake.script(reply(tool_use("computer", {"action": "left_click", "coordinate": [10, 10]})),
                reply(text("unreachable")))
    sid = create(fake_service, "lose it")
    held.wait_started()
    desktops.lose(sid)
    held.release()
    final = wait_status(fake_service, sid, "succeeded", "failed")
    assert final["status"] == "failed" and "desktop was lost" in final["error"]
    kinds = [(e["type"], e["data"].get("kind")) for e in events(fake_service, sid)]
    assert ("error", "desktop_lost") in kinds and len(fake.requests) == 1
    assert len(desktops) == 0  # released all the same


def test_a_desktop_that_cannot_start_fails_the_session(fake_service: Service) -> None:
    from deskpilot.errors import DesktopStartError

    fake_service.extra["desktops"].start_error = DesktopStartError("no display for you")
    sid = create(fake_service, "never starts")
    final = wait_status(fake_service, sid, "succeeded", "failed")
    assert final["status"] == "failed" and final["error"] == "no display for you"
    assert statuses(fake_service, sid) == ["queued", "starting", "failed"]


# --- on a real desktop ---


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
