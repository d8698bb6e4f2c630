"""Admission control: with every desktop busy, new sessions queue up to ``max_queued``, then get 429."""

from __future__ import annotations

from pathlib import Path

from tests.support.fake_desktop import FakeBackend
from tests.support.fake_messages import FakeMessages, reply, text, tool_use
from tests.web.conftest import start_service, stop_service, wait_status


def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    with FakeMessages() as fake:
        # The first session waits on an approval, holding the only desktop; the others must wait for it.
        fake.script(reply(tool_use("bash", {"command": "true"})), reply(text("done")))
        svc = start_service(tmp_path / "data", FakeBackend(), anthropic_base_url=fake.url, model="claude-opus-4-5",
                            thinking_budget_tokens=0, max_sessions=1, max_queued=1, queue_retry_after_s=7)
        try:
            with svc.client("alice") as c:
                first = c.post("/api/sessions", json={"task": "hold", "policy": {"preset": "strict"}})
                assert first.status_code == 201, first.text
                card = wait_status(svc, first.json()["id"], "awaiting_approval")["pending_approval"]
                second = c.post("/api/sessions", json={"task": "wait"})
                assert second.status_code == 201 and second.json()["status"] == "queued"
                third = c.post("/api/sessions", json={"task": "too many"})
                assert third.status_code == 429 and third.headers["Retry-After"] == "7"
                assert "waiting for a desktop" in third.json()["error"]
                assert c.get("/api/sessions", params={"status": "queued"}).json()["total"] == 1  # nothing stored
                c.post(f"/api/sessions/{first.json()['id']}/cancel")
                c.post(f"/api/sessions/{second.json()['id']}/cancel")
                assert card["status"] == "pending"
        finally:
            stop_service(svc)
