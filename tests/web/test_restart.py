"""Kill the service (SIGKILL) mid-step and during a pending approval; start it again on the same data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.fake_messages import FakeMessages, Reply, Request, reply, text, tool_use
from tests.web.conftest import make_tokens, wait_for
from tests.web.procs import ServerProcess


def get(server: ServerProcess, token: str, path: str, **params: Any) -> Any:
    r = httpx.get(server.url + path, headers={"Authorization": f"Bearer {token}"}, params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def post(server: ServerProcess, token: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.post(server.url + path, headers={"Authorization": f"Bearer {token}"}, json=body, timeout=60)


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


def test_restart_mid_step_and_during_a_pending_approval(tmp_path: Path) -> None:
    data = tmp_path / "data"
    slow_marker, approved_marker = tmp_path / "slow.txt", tmp_path / "approved.txt"
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
            before = {sid: get(server, token, f"/api/sessions/{sid}/events")["items"] for sid in (slow_id, gated_id)}
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


def test_after_a_restart_resume_waits_for_the_pending_decision(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
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


def test_an_approved_action_cut_off_by_a_restart_is_not_run_again(tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    with gated_run(tmp_path, f"sleep 60; echo ran >> {marker}", "checked the screen instead") as run:
        token, sid = run.token, run.sid
        assert post(run.server, token, f"/api/sessions/{sid}/approvals/{run.card['id']}",
                    {"decision": "approve"}).status_code == 200
        wait_for(lambda: any(e["type"] == "approval_decided" for e in get(
            run.server, token, f"/api/sessions/{sid}/events")["items"]), 60)  # approved, and the command runs
        run.restart()
        server = run.server
        results = [e["data"] for e in get(server, token, f"/api/sessions/{sid}/events")["items"]
                   if e["type"] == "tool_result"]
        assert len(results) == 1 and "outcome unknown" in results[0]["error"]
        assert post(server, token, f"/api/sessions/{sid}/resume").status_code == 200
        done = wait_session(server, token, sid, "succeeded", "failed")
        assert done["status"] == "succeeded" and done["result"] == "checked the screen instead"
        assert not marker.exists()  # the approved command was cut off and never run again
        assert "outcome unknown" in json.dumps(run.fake.requests[-1].body["messages"][-1])
