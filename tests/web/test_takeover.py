"""Takeover: the agent stops between actions while the owner holds control; handback resumes with a note.

The control flow runs on the fake desktop; input through noVNC's transport (only for the owner holding
control, dropped on the server otherwise) needs a real desktop and its VNC server.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.fake_desktop import FakeBackend, Match
from tests.support.fake_messages import FakeMessages, reply, text, tool_use
from tests.web.conftest import Service, events, wait_for, wait_status
from tests.web.rfb import RfbClient


def mouse(svc: Service, sid: str) -> tuple[int, int]:
    """Where the X pointer really is, asked through the desktop's own bash tool."""
    client = svc.app.state.runner.live[sid].client
    out = svc.call(client.tool("bash", {"command": "xdotool getmouselocation --shell"})).output
    values = dict(line.split("=", 1) for line in out.split() if "=" in line)
    return int(values["X"]), int(values["Y"])


def vnc(svc: Service, sid: str, who: str = "alice", **headers: str) -> RfbClient:
    url = f"{svc.ws_url}/api/sessions/{sid}/vnc"
    return RfbClient(url, {"Authorization": f"Bearer {svc.tokens[who]}", **headers})


def post(svc: Service, path: str, body: Any = None) -> Any:
    with svc.client("alice") as c:
        return c.post(path, json=body)


def test_an_approved_action_waits_for_handback_and_is_replanned(fake_service: Service) -> None:
    fake: FakeMessages = fake_service.extra["fake"]
    desktops: FakeBackend = fake_service.extra["desktops"]
    fake.script(reply(tool_use("bash", {"command": "make step"})), reply(text("Finished after handback.")))
    with fake_service.client("alice") as c:
        sid = c.post("/api/sessions", json={"task": "do a step", "policy": {"preset": "strict"}}).json()["id"]
    card = wait_status(fake_service, sid, "awaiting_approval")["pending_approval"]
    assert post(fake_service, f"/api/sessions/{sid}/handback").status_code == 409  # nobody holds it yet
    taken = post(fake_service, f"/api/sessions/{sid}/takeover").json()
    assert taken["status"] == "taken_over" and taken["control"] == "user"
    assert post(fake_service, f"/api/sessions/{sid}/takeover").status_code == 409
    assert post(fake_service, f"/api/sessions/{sid}/pause").status_code == 409
    assert post(fake_service, f"/api/sessions/{sid}/resume").status_code == 409
    with fake_service.client("bob") as c:
        assert c.post(f"/api/sessions/{sid}/handback").status_code == 404  # not bob's session

    # Approving while the user drives: the decision is recorded, the action is held at the gate.
    assert post(fake_service, f"/api/sessions/{sid}/approvals/{card['id']}", {"decision": "approve"}).status_code == 200
    wait_for(lambda: any(e["type"] == "approval_decided" for e in events(fake_service, sid)))
    with fake_service.client("alice") as c:
        assert c.get(f"/api/sessions/{sid}").json()["status"] == "taken_over"
    assert desktops.commands(sid) == []

    back = post(fake_service, f"/api/sessions/{sid}/handback", {"note": "logged in for you"})
    assert back.status_code == 200 and back.json()["control"] == "agent"
    final = wait_status(fake_service, sid, "succeeded", "failed")
    assert final["status"] == "succeeded" and final["result"] == "Finished after handback."
    assert desktops.commands(sid) == []  # planned for a screen that no longer exists: not run
    told = json.dumps(fake.requests[1].body["messages"][-1])
    assert "took control of the desktop" in told and "logged in for you" in told
    assert len(fake.requests[1].images) == 1  # with a fresh screenshot
    kinds = [(e["type"], e["data"].get("status")) for e in events(fake_service, sid)]
    assert ("status", "taken_over") in kinds and ("user_message", None) in kinds


def test_takeover_waits_for_the_action_in_flight_and_never_interrupts_it(fake_service: Service) -> None:
    fake: FakeMessages = fake_service.extra["fake"]
    desktops: FakeBackend = fake_service.extra["desktops"]
    held = desktops.block(Match("bash", "first"))
    fake.script(reply(tool_use("bash", {"command": "first"})), reply(tool_use("bash", {"command": "second"})),
                reply(text("both done")))
    with fake_service.client("alice") as c:
        sid = c.post("/api/sessions", json={"task": "two steps", "policy": {"preset": "autonomous"}}).json()["id"]
    held.wait_started()
    answer: list[Any] = []
    taking = threading.Thread(target=lambda: answer.append(post(fake_service, f"/api/sessions/{sid}/takeover")))
    taking.start()
    time.sleep(0.3)  # a takeover that did not wait would have answered by now (this only makes a miss likelier)
    assert answer == [] and taking.is_alive()
    held.release()
    taking.join(30)
    assert answer[0].status_code == 200 and answer[0].json()["status"] == "taken_over"
    results = wait_for(lambda: [e["data"] for e in events(fake_service, sid) if e["type"] == "tool_result"])
    assert len(results) == 1 and not results[0]["is_error"]  # the action ran to its end
    assert desktops.commands(sid) == ["first"]  # the next one waits at the gate
    with fake_service.client("alice") as c:
        assert c.get(f"/api/sessions/{sid}").json()["control"] == "user"
    assert post(fake_service, f"/api/sessions/{sid}/handback").status_code == 200
    assert wait_status(fake_service, sid, "succeeded", "failed")["result"] == "both done"
    assert desktops.commands(sid) == ["first"]  # "second" was planned before the takeover: not run
    assert "took control of the desktop" in json.dumps(fake.requests[2].body["messages"][-1])


def test_cancel_while_taken_over_ends_the_run(fake_service: Service) -> None:
    fake: FakeMessages = fake_service.extra["fake"]
    fake.script(reply(tool_use("bash", {"command": "make step"})))
    with fake_service.client("alice") as c:
        sid = c.post("/api/sessions", json={"task": "do a step", "policy": {"preset": "strict"}}).json()["id"]
    wait_status(fake_service, sid, "awaiting_approval")
    assert post(fake_service, f"/api/sessions/{sid}/takeover").status_code == 200
    assert post(fake_service, f"/api/sessions/{sid}/cancel").status_code == 200
    final = wait_status(fake_service, sid, "cancelled")
    assert final["pending_approval"] is None and fake_service.extra["desktops"].commands(sid) == []
    assert post(fake_service, f"/api/sessions/{sid}/takeover").status_code == 409


# --- on a real desktop: input through noVNC's transport ---


def test_takeover_gives_the_owner_input_and_handback_resumes_with_a_note(agent_service: Service,
                                                                         shared: Path) -> None:
    marker = shared / "marker.txt"
    fake: FakeMessages = agent_service.extra["fake"]
    fake.script(reply(tool_use("bash", {"command": f"echo step >> {marker}"})), reply(text("Finished after handback.")))
    with agent_service.client("alice") as c:
        sid = c.post("/api/sessions", json={"task": "do a step", "policy": {"preset": "strict"},
                                            "screen": {"width": 1024, "height": 768}}).json()["id"]
    card = wait_status(agent_service, sid, "awaiting_approval")["pending_approval"]

    with pytest.raises(InvalidStatus) as other:
        vnc(agent_service, sid, who="bob")
    assert other.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as evil:
        vnc(agent_service, sid, Origin="http://evil.example")
    assert evil.value.response.status_code == 403

    watcher = vnc(agent_service, sid).handshake()  # agent has control: view-only
    assert (watcher.width, watcher.height) == (1024, 768)
    start = mouse(agent_service, sid)
    target = (start[0] + 37) % 1000 + 10, (start[1] + 53) % 700 + 10
    watcher.pointer(*target)
    time.sleep(0.5)
    assert mouse(agent_service, sid) == start  # dropped on the server

    with agent_service.client("alice") as c:
        taken = c.post(f"/api/sessions/{sid}/takeover").json()
        assert taken["status"] == "taken_over" and taken["control"] == "user"
        assert c.post(f"/api/sessions/{sid}/takeover").status_code == 409
    driver = vnc(agent_service, sid).handshake()  # opened while holding control: input allowed
    driver.pointer(*target)
    wait_for(lambda: mouse(agent_service, sid) == target, 10)
    watcher.pointer(5, 5)  # the older view-only connection still cannot move it
    time.sleep(0.5)
    assert mouse(agent_service, sid) == target

    with agent_service.client("alice") as c:  # approving while the user drives: held at the gate
        assert c.post(f"/api/sessions/{sid}/approvals/{card['id']}", json={"decision": "approve"}).status_code == 200
        time.sleep(0.5)
        assert c.get(f"/api/sessions/{sid}").json()["status"] == "taken_over"
        assert not marker.exists()
        back = c.post(f"/api/sessions/{sid}/handback", json={"note": "logged in for you"})
        assert back.status_code == 200 and back.json()["control"] == "agent"
    with pytest.raises(ConnectionClosed):  # input-capable connections end at handback
        for _ in range(200):
            driver.ws.recv(timeout=15)
    watcher.close()

    final = wait_status(agent_service, sid, "succeeded", "failed")
    assert final["status"] == "succeeded" and final["result"] == "Finished after handback."
    assert not marker.exists()  # planned for a screen that no longer exists: not run
    told = json.dumps(fake.requests[1].body["messages"][-1])
    assert "took control of the desktop" in told and "logged in for you" in told
    kinds = [(e["type"], e["data"].get("status")) for e in events(agent_service, sid)]
    assert ("status", "taken_over") in kinds and ("user_message", None) in kinds
