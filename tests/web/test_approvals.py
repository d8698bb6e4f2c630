"""Approvals through the service: cards with the proposed action, decisions exactly once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.support.fake_messages import FakeMessages, reply, text, tool_use
from tests.web.conftest import Service, events, wait_status


def ask(svc: Service, task: str, command: str, final_words: str) -> tuple[str, dict[str, Any]]:
    """A strict session whose model proposes the bash ``command``, then says ``final_words``; returns the
    session id and the approval card it waits on."""
    fake: FakeMessages = svc.extra["fake"]
    fake.script(reply(tool_use("bash", {"command": command})), reply(text(final_words)))
    with svc.client("alice") as c:
        r = c.post("/api/sessions", json={"task": task, "policy": {"preset": "strict"}})
        assert r.status_code == 201, r.text
        sid = str(r.json()["id"])
    return sid, wait_status(svc, sid, "awaiting_approval")["pending_approval"]


def test_two_concurrent_decisions_one_wins_and_the_action_runs_once(agent_service: Service, tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    sid, card = ask(agent_service, "write the marker", f"echo ran >> {marker}", "Wrote it.")
    assert card["status"] == "pending" and card["tool"] == "bash" and str(marker) in card["input"]["command"]
    url = f"/api/sessions/{sid}/approvals/{card['id']}"

    def decide(decision: str) -> int:
        with agent_service.client("alice") as c:
            return c.post(url, json={"decision": decision, "note": "racing"}).status_code

    with ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(decide, ["approve", "approve"]))
    assert codes == [200, 409]
    final = wait_status(agent_service, sid, "succeeded", "failed")
    assert final["status"] == "succeeded" and final["pending_approval"] is None
    assert marker.read_text() == "ran\n"  # executed exactly once
    evs = events(agent_service, sid)
    by_user = [e for e in evs if e["type"] == "approval_decided" and e["data"]["by"] == "user"]
    assert len(by_user) == 1 and by_user[0]["data"]["approval_id"] == card["id"]
    assert len([e for e in evs if e["type"] == "tool_result"]) == 1
    with agent_service.client("alice") as c:
        again = c.post(url, json={"decision": "reject"})
        assert again.status_code == 409 and "already decided" in again.json()["error"]


def test_reject_with_note_reaches_the_model_and_nothing_runs(agent_service: Service, tmp_path: Path) -> None:
    marker = tmp_path / "never.txt"
    sid, card = ask(agent_service, "touch the marker", f"touch {marker}", "Understood, stopping.")
    with agent_service.client("alice") as c:
        r = c.post(f"/api/sessions/{sid}/approvals/{card['id']}", json={"decision": "reject", "note": "not that"})
        assert r.status_code == 200 and r.json()["status"] == "reject" and r.json()["note"] == "not that"
    assert wait_status(agent_service, sid, "succeeded", "failed")["status"] == "succeeded"
    assert not marker.exists()
    fake: FakeMessages = agent_service.extra["fake"]
    sent = str(fake.requests[1].body["messages"][-1])
    assert "the user rejected this action: not that" in sent


def test_edit_runs_the_edited_input(agent_service: Service, tmp_path: Path) -> None:
    wanted, proposed = tmp_path / "edited.txt", tmp_path / "proposed.txt"
    sid, card = ask(agent_service, "touch something", f"touch {proposed}", "ok")
    with agent_service.client("alice") as c:
        assert c.post(f"/api/sessions/{sid}/approvals/{card['id']}", json={"decision": "edit"}).status_code == 400
        r = c.post(f"/api/sessions/{sid}/approvals/{card['id']}",
                   json={"decision": "edit", "input": {"command": f"touch {wanted}"}})
        assert r.status_code == 200, r.text
    assert wait_status(agent_service, sid, "succeeded", "failed")["status"] == "succeeded"
    assert wanted.exists() and not proposed.exists()


def test_cancel_while_awaiting_approval_expires_the_card(agent_service: Service, tmp_path: Path) -> None:
    marker = tmp_path / "never.txt"
    sid, card = ask(agent_service, "touch the marker", f"touch {marker}", "unreachable")
    with agent_service.client("alice") as c:
        assert c.post(f"/api/sessions/{sid}/cancel").status_code == 200
        final = wait_status(agent_service, sid, "cancelled")
        assert final["pending_approval"] is None  # nothing is left waiting for a decision that can't matter
        late = c.post(f"/api/sessions/{sid}/approvals/{card['id']}", json={"decision": "approve"})
        assert late.status_code == 409 and "expired" in late.json()["error"]
    assert not marker.exists()
    results = [e for e in events(agent_service, sid) if e["type"] == "tool_result"]
    assert len(results) == 1 and results[0]["data"]["is_error"]
