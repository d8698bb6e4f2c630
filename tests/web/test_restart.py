"""A crash mid-step and during a pending approval, then a start on the same data.

The fast tier crashes the in-process service on the fake desktop (``crash_and_restart``: its event loop is
frozen, so no shutdown code runs); the real thing, a SIGKILLed ``deskpilot serve`` with real desktops, runs
below (marked ``desktop``) and again on PostgreSQL in test_store_backends.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.history import RESTART_UNKNOWN
from tests.support.fake_desktop import FakeBackend, Match
from tests.support.fake_messages import FakeMessages, Reply, Request, reply, text, tool_use
from tests.support.shared_dir import desktop_writable_dir
from tests.web.conftest import TLS, Service, crash_and_restart, events, make_tokens, wait_for, wait_status
from tests.web.procs import ServerProcess

# --- in process, on the fake desktop ---


def create(svc: Service, task: str, preset: str) -> str:
    with svc.client("alice") as c:
        r = c.post("/api/sessions", json={"task": task, "policy": {"preset": preset}})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def call(svc: Service, path: str, body: Any = None) -> int:
    with svc.client("alice") as c:
        return c.post(path, json=body).status_code


def last_status(svc: Service, sid: str) -> str:
    return str([e["data"]["status"] for e in events(svc, sid) if e["type"] == "status"][-1])


def by_task(fake: FakeMessages, task: str) -> list[Request]:
    return [r for r in fake.requests if task in json.dumps(r.body["messages"][0])]


def two_step_model(first: dict[str, Any], final_words: str) -> Any:
    def model(req: Request) -> Reply:
        if any(m["role"] == "assistant" for m in req.body["messages"]):
            return reply(text(final_words))
        return reply(tool_use("bash", first))

    return model


def test_crash_mid_step_and_during_a_pending_approval(fake_service: Service) -> None:
    fake: FakeMessages = fake_service.extra["fake"]
    desktops: FakeBackend = fake_service.extra["desktops"]
    held = desktops.block(Match("bash", "slow"))  # never released: the crash cuts it off

    def model(req: Request) -> Reply:
        msgs = req.body["messages"]
        first, answered = json.dumps(msgs[0]), sum(1 for m in msgs if m["role"] == "assistant")
        if "TASK-SLOW" in first:
            if answered == 0:
                return reply(text("Looking first."), tool_use("computer", {"action": "screenshot"}))
            if answered == 1:
                return reply(text("Running a slow command."), tool_use("bash", {"command": "slow thing"}))
            return reply(text("The slow command's outcome is unknown; I will not repeat it."))
        if answered == 0:
            return reply(tool_use("bash", {"command": "approved thing"}))
        return reply(text("Approved step done."))

    fake.script(*([model] * 6))
    slow, gated = create(fake_service, "TASK-SLOW", "autonomous"), create(fake_service, "TASK-GATED", "strict")
    card = wait_status(fake_service, gated, "awaiting_approval")["pending_approval"]
    held.wait_started()  # mid-step: the slow command started and has no result
    wait_for(lambda: last_status(fake_service, gated) == "awaiting_approval")  # and the gated one is quiet too
    before = {sid: events(fake_service, sid) for sid in (slow, gated)}
    shot_ref = next(e["image"] for e in before[slow] if e["type"] == "tool_result")
    with fake_service.client("alice") as c:
        shot = c.get(f"/api/sessions/{slow}/screenshots/{shot_ref}").content
    assert shot.startswith(b"\x89PNG")

    crash_and_restart(fake_service, desktops)
    for sid in (slow, gated):
        after = events(fake_service, sid)
        assert after[: len(before[sid])] == before[sid]  # nothing lost or rewritten
        assert wait_status(fake_service, sid, "interrupted")["control"] == "agent"
    with fake_service.client("alice") as c:
        again = c.get(f"/api/sessions/{slow}/screenshots/{shot_ref}")
        assert again.status_code == 200 and again.content == shot  # screenshots intact
        still = c.get(f"/api/sessions/{gated}").json()["pending_approval"]
    results = [e["data"] for e in events(fake_service, slow) if e["type"] == "tool_result"]
    assert len(results) == 2 and results[1]["error"] == RESTART_UNKNOWN  # said by the restarted service
    assert results[1]["meta"] == {"outcome": "unknown"}
    assert still is not None and still["id"] == card["id"] and still["status"] == "pending"
    assert desktops.commands(gated) == []  # never auto-approved

    assert call(fake_service, f"/api/sessions/{gated}/approvals/{card['id']}", {"decision": "approve"}) == 200
    done = wait_status(fake_service, gated, "succeeded", "failed")
    assert done["status"] == "succeeded" and done["result"] == "Approved step done."
    assert desktops.commands(gated) == ["approved thing"]

    assert call(fake_service, f"/api/sessions/{slow}/resume") == 200
    assert wait_status(fake_service, slow, "succeeded", "failed")["status"] == "succeeded"
    assert desktops.commands(slow) == ["slow thing"]  # the cut-off command was never run again
    slow_calls = by_task(fake, "TASK-SLOW")
    assert len(slow_calls) == 3 and "outcome unknown" in json.dumps(slow_calls[2].body["messages"][-1])
    assert len(fake.requests) == 5


def test_after_a_crash_resume_waits_for_the_pending_decision(fake_service: Service) -> None:
    fake: FakeMessages = fake_service.extra["fake"]
    desktops: FakeBackend = fake_service.extra["desktops"]
    fake.script(*([two_step_model({"command": "gated thing"}, "done after the restart")] * 2))
    sid = create(fake_service, "gated", "strict")
    card = wait_status(fake_service, sid, "awaiting_approval")["pending_approval"]
    wait_for(lambda: last_status(fake_service, sid) == "awaiting_approval")
    crash_and_restart(fake_service, desktops)
    assert wait_status(fake_service, sid, "interrupted")["pending_approval"]["id"] == card["id"]
    assert call(fake_service, f"/api/sessions/{sid}/resume") == 200
    waiting = wait_status(fake_service, sid, "awaiting_approval")  # a fresh desktop, the same question
    assert waiting["pending_approval"]["id"] == card["id"] and desktops.commands(sid) == []
    assert len(desktops.desktops) == 2 and len(fake.requests) == 1  # the model is not asked again
    assert call(fake_service, f"/api/sessions/{sid}/approvals/{card['id']}", {"decision": "approve"}) == 200
    assert wait_status(fake_service, sid, "succeeded", "failed")["result"] == "done after the restart"
    assert desktops.commands(sid) == ["gated thing"]
    asked = [e for e in events(fake_service, sid) if e["type"] == "approval_requested"]
    assert len(asked) == 1  # the same card throughout


def test_a_decision_made_while_down_is_applied_on_resume(fake_service: Service) -> None:
    fake: FakeMessages = fake_service.extra["fake"]
    desktops: FakeBackend = fake_service.extra["desktops"]
    fake.script(*([two_step_model({"command": "rm -rf /"}, "I will not do that then.")] * 2))
    sid = create(fake_service, "gated", "strict")
    card = wait_status(fake_service, sid, "awaiting_approval")["pending_approval"]
    wait_for(lambda: last_status(fake_service, sid) == "awaiting_approval")
    crash_and_restart(fake_service, desktops)
    # Deciding an interrupted session's card requeues it; the run applies the stored decision at once.
    assert call(fake_service, f"/api/sessions/{sid}/approvals/{card['id']}",
                {"decision": "reject", "note": "never"}) == 200
    assert wait_status(fake_service, sid, "succeeded", "failed")["result"] == "I will not do that then."
    assert desktops.commands(sid) == []
    assert "the user rejected this action: never" in json.dumps(fake.requests[-1].body["messages"][-1])


def test_an_approved_action_cut_off_by_a_crash_is_not_run_again(fake_service: Service) -> None:
    fake: FakeMessages = fake_service.extra["fake"]
    desktops: FakeBackend = fake_service.extra["desktops"]
    held = desktops.block(Match("bash"))
    fake.script(*([two_step_model({"command": "deploy"}, "checked the screen instead")] * 2))
    sid = create(fake_service, "gated", "strict")
    card = wait_status(fake_service, sid, "awaiting_approval")["pending_approval"]
    assert call(fake_service, f"/api/sessions/{sid}/approvals/{card['id']}", {"decision": "approve"}) == 200
    held.wait_started()  # approved, and the command runs
    crash_and_restart(fake_service, desktops)
    results = [e["data"] for e in events(fake_service, sid) if e["type"] == "tool_result"]
    assert len(results) == 1 and results[0]["error"] == RESTART_UNKNOWN
    assert wait_status(fake_service, sid, "interrupted")["pending_approval"] is None
    assert call(fake_service, f"/api/sessions/{sid}/resume") == 200
    done = wait_status(fake_service, sid, "succeeded", "failed")
    assert done["status"] == "succeeded" and done["result"] == "checked the screen instead"
    assert desktops.commands(sid) == ["deploy"]  # cut off and never run again
    assert "outcome unknown" in json.dumps(fake.requests[-1].body["messages"][-1])


# --- a real process, SIGKILLed, with real desktops ---


def get(server: ServerProcess, token: str, path: str, **params: Any) -> Any:
    r = httpx.get(server.url + path, headers={"Authorization": f"Bearer {token}"}, params=params, timeout=30,
                  verify=TLS)
    assert r.status_code == 200, r.text
    return r.json()


def post(server: ServerProcess, token: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.post(server.url + path, headers={"Authorization": f"Bearer {token}"}, json=body, timeout=60,
                      verify=TLS)


def wait_session(server: ServerProcess, token: str, sid: str, *states: str, timeout: float = 120) -> Any:
    return wait_for(lambda: (s := get(server, token, f"/api/sessions/{sid}"))["status"] in states and s, timeout)


def model_env(fake: FakeMessages, **extra: str) -> dict[str, str]:
    return {"ANTHROPIC_API_KEY": "sk-test", "ANTHROPIC_BASE_URL": fake.url, "DESKPILOT_MODEL": "claude-opus-4-5",
            "DESKPILOT_THINKING_BUDGET_TOKENS": "0", **extra}


def restarted(server: ServerProcess, env: dict[str, str]) -> ServerProcess:
    """SIGKILL the service, then start it again on the same data directory and port."""
    server.kill()
    return ServerProcess(server.data_dir, env, port=server.port).start()


@dataclass
class GatedRun:
    """A strict-preset session whose one bash command waits for approval (``card``); the model then says
    its final words. ``restart()`` kills and restarts the service."""

    fake: FakeMessages
    env: dict[str, str]
    token: str
    server: ServerProcess
    sid: str = ""
    card: Any = None

    def restart(self) -> None:
        self.server = restarted(self.server, self.env)


@contextmanager
def gated_run(tmp_path: Path, command: str, final_words: str) -> Iterator[GatedRun]:
    data = tmp_path / "data"
    token = make_tokens(data, ["alice"])["alice"]

    def model(req: Request) -> Reply:
        if any(m["role"] == "assistant" for m in req.body["messages"]):
            return reply(text(final_words))
        return reply(tool_use("bash", {"command": command}))

    with FakeMessages() as fake:
        fake.script(*([model] * 4))
        env = model_env(fake)
        run = GatedRun(fake, env, token, ServerProcess(data, env).start())
        try:
            run.sid = post(run.server, token, "/api/sessions",
                           {"task": "gated", "policy": {"preset": "strict"}}).json()["id"]
            run.card = wait_session(run.server, token, run.sid, "awaiting_approval")["pending_approval"]
            yield run
        finally:
            run.server.stop()


@pytest.mark.desktop
def test_restart_mid_step_and_during_a_pending_approval(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with desktop_writable_dir() as shared:  # the desktop's shell runs as its sandbox uid
        slow_marker, approved_marker = shared / "slow.txt", shared / "approved.txt"
        token = make_tokens(data, ["alice"])["alice"]

        def model(req: Request) -> Reply:
            msgs = req.body["messages"]
            first, answered = json.dumps(msgs[0]), sum(1 for m in msgs if m["role"] == "assistant")
            if "TASK-SLOW" in first:
                if answered == 0:
                    return reply(text("Looking first."), tool_use("computer", {"action": "screenshot"}))
                if answered == 1:
                    return reply(text("Running a slow command."),
                                 tool_use("bash", {"command": f"sleep 60; echo slow >> {slow_marker}"}))
                return reply(text("The slow command's outcome is unknown; I will not repeat it."))
            if answered == 0:
                return reply(tool_use("bash", {"command": f"echo approved >> {approved_marker}"}))
            return reply(text("Approved step done."))

        with FakeMessages() as fake:
            fake.script(*([model] * 8))
            env = model_env(fake, DESKPILOT_MAX_SESSIONS="2")
            server = ServerProcess(data, env).start()
            try:
                slow = post(server, token, "/api/sessions", {"task": "TASK-SLOW", "policy": {"preset": "autonomous"}})
                gated = post(server, token, "/api/sessions", {"task": "TASK-GATED", "policy": {"preset": "strict"}})
                slow_id, gated_id = slow.json()["id"], gated.json()["id"]
                card = wait_session(server, token, gated_id, "awaiting_approval")["pending_approval"]
                # mid-step: the slow command has started and has no result yet
                wait_for(lambda: [e["type"] for e in get(
                    server, token, f"/api/sessions/{slow_id}/events")["items"]].count("tool_call") == 2, 120)
                before = {sid: get(server, token, f"/api/sessions/{sid}/events")["items"]
                          for sid in (slow_id, gated_id)}
                shot_ref = next(e["image"] for e in before[slow_id] if e["type"] == "tool_result")
                shot = httpx.get(f"{server.url}/api/sessions/{slow_id}/screenshots/{shot_ref}",
                                 headers={"Authorization": f"Bearer {token}"}).content
                assert shot.startswith(b"\x89PNG")

                server = restarted(server, env)
                for sid in (slow_id, gated_id):
                    after = get(server, token, f"/api/sessions/{sid}/events")["items"]
                    assert after[: len(before[sid])] == before[sid]  # nothing lost or rewritten
                    assert get(server, token, f"/api/sessions/{sid}")["status"] == "interrupted"
                again = httpx.get(f"{server.url}/api/sessions/{slow_id}/screenshots/{shot_ref}",
                                  headers={"Authorization": f"Bearer {token}"})
                assert again.status_code == 200 and again.content == shot  # screenshots intact
                results = [e for e in get(server, token, f"/api/sessions/{slow_id}/events")["items"]
                           if e["type"] == "tool_result"]
                assert len(results) == 2 and "outcome unknown" in results[1]["data"]["error"]
                still = get(server, token, f"/api/sessions/{gated_id}")["pending_approval"]
                assert still is not None and still["id"] == card["id"] and still["status"] == "pending"
                assert not approved_marker.exists()  # never auto-approved

                assert post(server, token, f"/api/sessions/{gated_id}/approvals/{card['id']}",
                            {"decision": "approve"}).status_code == 200
                done = wait_session(server, token, gated_id, "succeeded", "failed")
                assert done["status"] == "succeeded" and done["result"] == "Approved step done."
                assert approved_marker.read_text() == "approved\n"

                assert post(server, token, f"/api/sessions/{slow_id}/resume").status_code == 200
                done = wait_session(server, token, slow_id, "succeeded", "failed")
                assert done["status"] == "succeeded"
                assert not slow_marker.exists()  # the cut-off command was never run again
                slow_calls = [r for r in fake.requests if "TASK-SLOW" in json.dumps(r.body["messages"][0])]
                assert len(slow_calls) == 3 and "outcome unknown" in json.dumps(slow_calls[2].body["messages"][-1])
            finally:
                server.stop()


@pytest.mark.desktop
def test_after_a_restart_resume_waits_for_the_pending_decision(tmp_path: Path) -> None:
    with desktop_writable_dir() as shared:  # the desktop's shell runs as its sandbox uid
        marker = shared / "ran.txt"
        with gated_run(tmp_path, f"echo ran >> {marker}", "done after the restart") as run:
            run.restart()
            server, token, sid = run.server, run.token, run.sid
            assert post(server, token, f"/api/sessions/{sid}/resume").status_code == 200
            waiting = wait_session(server, token, sid, "awaiting_approval")  # a fresh desktop, the same question
            assert waiting["pending_approval"]["id"] == run.card["id"] and not marker.exists()
            assert post(server, token, f"/api/sessions/{sid}/approvals/{run.card['id']}",
                        {"decision": "approve"}).status_code == 200
            assert wait_session(server, token, sid, "succeeded", "failed")["result"] == "done after the restart"
            assert marker.read_text() == "ran\n"
