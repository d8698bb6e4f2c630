"""Takeover through noVNC's transport: input only for the owner holding control, handback resumes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

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


def test_takeover_gives_the_owner_input_and_handback_resumes_with_a_note(agent_service: Service,
                                                                         tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
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
