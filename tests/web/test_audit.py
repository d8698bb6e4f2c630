"""The audit trail: a person's decisions, edits, "always allow", takeover and handback are recorded with their
token's name, their address and what exactly — in the session's timeline and at ``GET /api/audit``."""

from __future__ import annotations

from typing import Any

from tests.support.fake_desktop import FakeBackend
from tests.support.fake_messages import FakeMessages, reply, text, tool_use
from tests.web.conftest import Service, events, wait_for, wait_status
from tests.web.test_control import post


def audit_events(svc: Service, sid: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events(svc, sid) if e["type"] == "audit"]


def listed(svc: Service, who: str = "alice", **params: Any) -> Any:
    with svc.client(who) as c:
        return c.get("/api/audit", params=params)


def test_decisions_takeover_and_handback_are_audited_with_name_and_address(fake_service: Service) -> None:
    fake: FakeMessages = fake_service.extra["fake"]
    desktops: FakeBackend = fake_service.extra["desktops"]
    fake.script(reply(tool_use("bash", {"command": "make one"})), reply(tool_use("bash", {"command": "make two"})),
                reply(tool_use("bash", {"command": "make three"})), reply(text("done")))
    with fake_service.client("alice") as c:
        sid = c.post("/api/sessions", json={"task": "three steps", "policy": {"preset": "strict"}}).json()["id"]

    first = wait_status(fake_service, sid, "awaiting_approval")["pending_approval"]
    assert post(fake_service, f"/api/sessions/{sid}/approvals/{first['id']}",
                {"decision": "edit", "input": {"command": "make one --dry-run"}, "note": "dry run first"}
                ).status_code == 200
    second = wait_for(lambda: (s := wait_status(fake_service, sid, "awaiting_approval")["pending_approval"])
                      and s["id"] != first["id"] and s)
    assert post(fake_service, f"/api/sessions/{sid}/approvals/{second['id']}",
                {"decision": "approve", "always_allow": True}).status_code == 200
    third = wait_for(lambda: (s := wait_status(fake_service, sid, "awaiting_approval")["pending_approval"])
                     and s["id"] != second["id"] and s)
    assert post(fake_service, f"/api/sessions/{sid}/takeover").status_code == 200
    assert post(fake_service, f"/api/sessions/{sid}/approvals/{third['id']}",
                {"decision": "reject", "note": "not now"}).status_code == 200
    assert post(fake_service, f"/api/sessions/{sid}/handback", {"note": "fixed it by hand"}).status_code == 200
    assert wait_status(fake_service, sid, "succeeded", "failed")["status"] == "succeeded"
    assert desktops.commands(sid) == ["make one --dry-run", "make two"]

    trail = audit_events(fake_service, sid)
    assert [(a["action"], a["detail"].get("decision")) for a in trail] == [
        ("approval.decide", "edit"), ("approval.decide", "approve"), ("session.takeover", None),
        ("approval.decide", "reject"), ("session.handback", None)]
    assert {(a["actor"], a["address"]) for a in trail} == {("alice", "127.0.0.1")}
    edit, always, _, reject, back = (a["detail"] for a in trail)
    assert edit["input"] == {"command": "make one"} and edit["edited_input"] == {"command": "make one --dry-run"}
    assert edit["note"] == "dry run first" and edit["tool"] == "bash" and edit["approval_id"] == first["id"]
    assert always["always_allow"] is True and always["input"] == {"command": "make two"}
    assert reject["note"] == "not now" and back == {"note": "fixed it by hand"}

    # The same entries over REST: newest first, or after an id oldest first; owner-only.
    page = listed(fake_service, session_id=sid)
    assert page.status_code == 200
    items = page.json()["items"]
    assert [i["id"] for i in items] == sorted((a["audit_id"] for a in trail), reverse=True)
    assert all(i["actor"] == "alice" and i["address"] == "127.0.0.1" and i["session_id"] == sid for i in items)
    later = listed(fake_service, session_id=sid, after=trail[2]["audit_id"]).json()["items"]
    assert [i["action"] for i in later] == ["approval.decide", "session.handback"]
    assert listed(fake_service, "bob").json()["items"] == []
    assert listed(fake_service, "bob", session_id=sid).status_code == 404
    assert listed(fake_service, after=-1).status_code == 422


def test_a_refused_action_is_not_audited_and_a_login_is(fake_service: Service) -> None:
    fake_service.extra["fake"].script(reply(text("done")))
    with fake_service.client("alice") as c:
        sid = c.post("/api/sessions", json={"task": "nothing"}).json()["id"]
    wait_status(fake_service, sid, "succeeded")
    assert post(fake_service, f"/api/sessions/{sid}/handback").status_code == 409  # nobody held it
    assert post(fake_service, f"/api/sessions/{sid}/approvals/nope", {"decision": "approve"}).status_code == 404
    assert audit_events(fake_service, sid) == []
    with fake_service.client(None) as c:
        assert c.post("/api/login", json={"token": fake_service.tokens["alice"]}).status_code == 200
    entries = listed(fake_service).json()["items"]
    assert [(e["action"], e["actor"], e["address"], e["session_id"]) for e in entries] == [
        ("login", "alice", "127.0.0.1", None)]
