"""Approvals through the service: cards with the proposed action, decisions exactly once.

On the fake desktop, which records the commands that reach it instead of running them; the approval race
runs once more on a real desktop (and on PostgreSQL in test_store_backends.py), where the approved command
really writes a file.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.support.fake_desktop import FakeBackend
from tests.support.fake_messages import FakeMessages, reply, text, tool_use
from tests.support.shared_dir import desktop_writable_dir
from tests.web.conftest import Service, events, wait_for, wait_status


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
    with desktop_writable_dir() as shared:  # the desktop's shell runs as its sandbox uid
        marker = shared / "ran.txt"
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


def session(svc: Service, sid: str) -> dict[str, Any]:
    with svc.client("alice") as c:
        body: dict[str, Any] = c.get(f"/api/sessions/{sid}").json()
        return body


def decide(svc: Service, sid: str, card: dict[str, Any], **body: Any) -> Any:
    with svc.client("alice") as c:
        return c.post(f"/api/sessions/{sid}/approvals/{card['id']}", json=body)


def test_approve_runs_the_action_exactly_once_however_many_decide(fake_service: Service) -> None:
    desktops: FakeBackend = fake_service.extra["desktops"]
    sid, card = ask(fake_service, "run it", "make install", "Installed.")
    assert card["status"] == "pending" and card["tool"] == "bash" and card["input"] == {"command": "make install"}
    assert desktops.commands(sid) == []

    with ThreadPoolExecutor(3) as pool:
        codes = sorted(pool.map(lambda d: decide(fake_service, sid, card, decision=d).status_code,
                                ["approve", "approve", "reject"]))
    assert codes == [200, 409, 409]
    final = wait_status(fake_service, sid, "succeeded", "failed")
    assert final["pending_approval"] is None
    evs = events(fake_service, sid)
    decided = [e["data"] for e in evs if e["type"] == "approval_decided" and e["data"]["by"] == "user"]
    assert len(decided) == 1 and decided[0]["approval_id"] == card["id"]
    assert desktops.commands(sid) == (["make install"] if decided[0]["decision"] == "approve" else [])
    assert len([e for e in evs if e["type"] == "tool_result"]) == 1
    again = decide(fake_service, sid, card, decision="reject")
    assert again.status_code == 409 and "already decided" in again.json()["error"]
    assert decide(fake_service, sid, {"id": "ap_nope"}, decision="approve").status_code == 404


def test_reject_with_note_reaches_the_model_and_nothing_runs(fake_service: Service) -> None:
    sid, card = ask(fake_service, "delete things", "rm -rf build", "Understood, stopping.")
    r = decide(fake_service, sid, card, decision="reject", note="not that")
    assert r.status_code == 200 and r.json()["status"] == "reject" and r.json()["note"] == "not that"
    assert wait_status(fake_service, sid, "succeeded", "failed")["status"] == "succeeded"
    assert fake_service.extra["desktops"].commands(sid) == []
    fake: FakeMessages = fake_service.extra["fake"]
    sent = str(fake.requests[1].body["messages"][-1])
    assert "the user rejected this action: not that" in sent


def test_edit_runs_the_edited_input(fake_service: Service) -> None:
    sid, card = ask(fake_service, "touch something", "touch proposed.txt", "ok")
    assert decide(fake_service, sid, card, decision="edit").status_code == 400  # an edit needs its input
    r = decide(fake_service, sid, card, decision="edit", input={"command": "touch edited.txt"})
    assert r.status_code == 200, r.text
    assert wait_status(fake_service, sid, "succeeded", "failed")["status"] == "succeeded"
    assert fake_service.extra["desktops"].commands(sid) == ["touch edited.txt"]
    fake: FakeMessages = fake_service.extra["fake"]
    assert "edited this action" in json.dumps(fake.requests[1].body["messages"][-1])


def test_always_allow_lets_the_same_action_through_for_the_rest_of_the_session(fake_service: Service) -> None:
    fake: FakeMessages = fake_service.extra["fake"]
    fake.script(reply(tool_use("bash", {"command": "make test"})), reply(tool_use("bash", {"command": "make test"})),
                reply(tool_use("bash", {"command": "make deploy"})), reply(text("tested twice")))
    with fake_service.client("alice") as c:
        r = c.post("/api/sessions", json={"task": "test it", "policy": {"preset": "strict"}})
        sid = str(r.json()["id"])
    card = wait_status(fake_service, sid, "awaiting_approval")["pending_approval"]
    assert decide(fake_service, sid, card, decision="approve", always_allow=True).status_code == 200
    # The decision is stored before the loop moves on: wait for the next card, not the decided one.
    other = wait_for(lambda: (p := session(fake_service, sid)["pending_approval"]) and p["id"] != card["id"] and p)
    assert other["input"] == {"command": "make deploy"}  # a different action still asks
    assert decide(fake_service, sid, other, decision="reject").status_code == 200
    assert wait_status(fake_service, sid, "succeeded", "failed")["result"] == "tested twice"
    assert fake_service.extra["desktops"].commands(sid) == ["make test", "make test"]
    asked = [e["data"] for e in events(fake_service, sid) if e["type"] == "approval_requested"]
    assert [a["input"]["command"] for a in asked] == ["make test", "make deploy"]


def test_cancel_while_awaiting_approval_expires_the_card(fake_service: Service) -> None:
    sid, card = ask(fake_service, "touch the marker", "touch marker", "unreachable")
    with fake_service.client("alice") as c:
        assert c.post(f"/api/sessions/{sid}/cancel").status_code == 200
        final = wait_status(fake_service, sid, "cancelled")
        assert final["pending_approval"] is None  # nothing is left waiting for a decision that can't matter
    late = decide(fake_service, sid, card, decision="approve")
    assert late.status_code == 409 and "expired" in late.json()["error"]
    assert fake_service.extra["desktops"].commands(sid) == []
    results = [e for e in events(fake_service, sid) if e["type"] == "tool_result"]
    assert len(results) == 1 and results[0]["data"]["is_error"]
