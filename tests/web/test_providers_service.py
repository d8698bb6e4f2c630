"""Every provider through the service: a task created over REST runs through the real SDK against the fake
API, with the same events, approvals and session data as Claude. A vendor safety check becomes an approval
card whose action does not run before a person approves (and never after a rejection). The fake desktop
backend shows what ran."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import fake_compat as fc
from tests.support import fake_gemini as fg
from tests.support import fake_openai as fo
from tests.support.fake_desktop import FakeBackend
from tests.web.conftest import Service, events, start_service, stop_service, wait_for, wait_status

OPENAI = "openai/computer-use-preview"
GEMINI = "gemini/gemini-2.5-computer-use-preview-10-2025"
UITARS = "openai-compatible/ui-tars-1.5-7b"


@pytest.fixture
def providers(tmp_path: Path) -> Iterator[Service]:
    """No Anthropic key; OpenAI and Gemini keys with their fake APIs; a compat key for a configured endpoint
    that is closed (sessions bring their own ``base_url``, the fake compat server)."""
    desktops = FakeBackend()
    with fo.FakeOpenAI() as openai, fg.FakeGemini() as gemini, fc.FakeCompat() as compat:
        svc = start_service(tmp_path / "data", desktops, anthropic_api_key=None, openai_api_key="sk-o",
                            openai_base_url=openai.url + "/v1", gemini_api_key="g-key", gemini_base_url=gemini.url,
                            openai_compat_base_url="http://127.0.0.1:9/v1", openai_compat_api_key="compat-secret")
        svc.extra.update(openai=openai, gemini=gemini, compat=compat, desktops=desktops)
        try:
            yield svc
        finally:
            stop_service(svc)


def create(svc: Service, model: str, **extra: Any) -> str:
    with svc.client("alice") as c:
        r = c.post("/api/sessions", json={"task": "do the thing", "model": model, **extra})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def decide(svc: Service, sid: str, approval_id: str, decision: str) -> dict[str, Any]:
    with svc.client("alice") as c:
        r = c.post(f"/api/sessions/{sid}/approvals/{approval_id}", json={"decision": decision})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def next_card(svc: Service, sid: str, after: set[str]) -> dict[str, Any]:
    """The session's pending approval card once it is a new one."""
    def card() -> dict[str, Any] | None:
        pending: dict[str, Any] | None = wait_status(svc, sid, "awaiting_approval")["pending_approval"]
        return pending if pending is not None and pending["id"] not in after else None
    found: dict[str, Any] = wait_for(card, 60)
    return found


def types(svc: Service, sid: str) -> list[str]:
    return [e["type"] for e in events(svc, sid)]


def test_availability_is_per_provider_and_names_the_setting(providers: Service) -> None:
    health = httpx.get(providers.url + "/healthz").json()
    assert health["tasks_can_run"] is False and "ANTHROPIC_API_KEY" in health["reason"]  # the default model
    providers.extra["openai"].script(fo.respond(fo.message("All done.")))
    with providers.client("alice") as c:
        r = c.post("/api/sessions", json={"task": "t"})
        assert r.status_code == 503 and "ANTHROPIC_API_KEY" in r.json()["error"]
        assert "claude" in r.json()["error"]
        r = c.post("/api/sessions", json={"task": "t", "model": "mistral/large"})
        assert r.status_code == 422 and "unknown model provider 'mistral'" in r.json()["error"]
        r = c.post("/api/sessions", json={"task": "t", "model": OPENAI, "base_url": "http://127.0.0.1:1/v1"})
        assert r.status_code == 422 and "openai-compatible" in r.json()["error"]
        for bad in ["ftp://h/v1", "http://user:pw@h/v1", "http://h/v1?key=s", "h:80", "http://", "http://h:99999/"]:
            r = c.post("/api/sessions", json={"task": "t", "model": UITARS, "base_url": bad})
            assert r.status_code == 422 and r.json()["details"][0]["loc"][-1] == "base_url", (bad, r.text)
    sid = create(providers, OPENAI)
    assert wait_status(providers, sid, "succeeded", "failed")["status"] == "succeeded"
    assert providers.extra["openai"].requests[0].headers["authorization"] == "Bearer sk-o"


def test_without_a_compat_endpoint_sessions_must_bring_one(tmp_path: Path) -> None:
    svc = start_service(tmp_path / "data", FakeBackend(), anthropic_api_key=None, openai_compat_base_url=None)
    try:
        with svc.client("alice") as c:
            r = c.post("/api/sessions", json={"task": "t", "model": UITARS})
            assert r.status_code == 503 and "DESKPILOT_OPENAI_COMPAT_BASE_URL" in r.json()["error"]
            r = c.post("/api/sessions", json={"task": "t", "model": "gemini/x"})
            assert r.status_code == 503 and "GEMINI_API_KEY" in r.json()["error"]
    finally:
        stop_service(svc)


def test_openai_safety_checks_wait_for_a_person(providers: Service) -> None:
    fake: fo.FakeOpenAI = providers.extra["openai"]
    first = fo.check("malicious_instructions", "The page asks you to ignore the user.")
    second = fo.check("sensitive_domain", "This is a banking site.")
    fake.script(fo.respond(fo.computer_call(fo.click(100, 120), checks=[first])),
                fo.respond(fo.computer_call(fo.click(300, 200), checks=[second])),
                fo.respond(fo.message("Stopped as you asked.")))
    sid = create(providers, OPENAI, policy={"preset": "autonomous"})  # the checks ask even so
    desktop = providers.extra["desktops"]

    card = next_card(providers, sid, set())
    assert card["safety_checks"] == [first] and card["tool"] == "computer"
    assert "malicious_instructions" in card["reason"]
    assert desktop.desktop(sid).clicks == []  # not before a person's decision
    assert decide(providers, sid, card["id"], "approve")["safety_checks"] == [first]

    card2 = next_card(providers, sid, {card["id"]})
    assert card2["safety_checks"] == [second]
    assert desktop.desktop(sid).clicks == [(100, 120)]  # the approved one ran
    decide(providers, sid, card2["id"], "reject")
    done = wait_status(providers, sid, "succeeded", "failed")
    assert done["status"] == "succeeded" and done["result"] == "Stopped as you asked."
    assert desktop.desktop(sid).clicks == [(100, 120)]  # the rejected one never ran

    outputs = [i for i in fake.requests[1].body["input"] if i.get("type") == "computer_call_output"]
    assert outputs[-1]["acknowledged_safety_checks"] == [first]
    rejected = [i for i in fake.requests[2].body["input"] if i.get("type") == "computer_call_output"]
    assert "acknowledged_safety_checks" not in rejected[-1]
    evs = events(providers, sid)
    asked = [e["data"] for e in evs if e["type"] == "approval_requested"]
    assert [a["safety_checks"] for a in asked] == [[first], [second]]
    assert [e["data"]["decision"] for e in evs if e["type"] == "approval_decided"] == ["approve", "reject"]
    assert {"status", "user_message", "usage", "tool_call", "tool_result", "assistant_text"} <= set(types(providers,
                                                                                                          sid))


def test_gemini_require_confirmation_waits_for_a_person(providers: Service) -> None:
    fake: fg.FakeGemini = providers.extra["gemini"]
    fake.script(fg.candidate(fg.call("click_at", x=100, y=100, confirm="Accepting cookies on a banking site.")),
                fg.candidate(fg.call("click_at", x=500, y=500, confirm="Submitting a payment.")),
                fg.candidate(fg.text("I did not submit the payment.")))
    sid = create(providers, GEMINI)
    desktop = providers.extra["desktops"]

    card = next_card(providers, sid, set())
    assert [(c["code"], c["message"]) for c in card["safety_checks"]] == [
        ("require_confirmation", "Accepting cookies on a banking site.")]
    assert desktop.desktop(sid).clicks == []
    decide(providers, sid, card["id"], "approve")
    card2 = next_card(providers, sid, {card["id"]})
    assert card2["safety_checks"][0]["message"] == "Submitting a payment."
    screen = desktop.desktop(sid)
    assert screen.clicks == [(round(100 * screen.width / 1000), round(100 * screen.height / 1000))]
    decide(providers, sid, card2["id"], "reject")
    assert wait_status(providers, sid, "succeeded", "failed")["status"] == "succeeded"
    assert len(screen.clicks) == 1  # the rejected payment never ran
    approved = fg.function_responses(fake.requests[1])[0]["response"]
    rejected = fg.function_responses(fake.requests[2])[0]["response"]
    assert approved["safety_acknowledgement"] == "true" and "safety_acknowledgement" not in rejected
    assert [e["data"]["decision"] for e in events(providers, sid) if e["type"] == "approval_decided"] == [
        "approve", "reject"]


def test_uitars_on_a_session_endpoint_asks_the_user_and_gets_no_service_key(providers: Service) -> None:
    fake: fc.FakeCompat = providers.extra["compat"]
    fake.script(fc.say("Thought: I need the password\nAction: call_user()"),
                fc.say("Thought: typing it\nAction: type(content='hunter2')"),
                fc.say("Thought: done\nAction: finished(content='logged in')"))
    sid = create(providers, UITARS, base_url=fake.url + "/v1")
    paused = wait_status(providers, sid, "paused")
    assert paused["base_url"] == fake.url + "/v1"
    asked = [e["data"] for e in events(providers, sid) if e["type"] == "status"][-1]
    assert asked["reason"] == "question"
    assert [e["data"]["text"] for e in events(providers, sid) if e["type"] == "assistant_text"][-1] == \
        "I need the password"
    with providers.client("alice") as c:
        assert c.post(f"/api/sessions/{sid}/messages", json={"text": "it is hunter2"}).status_code == 200
    done = wait_status(providers, sid, "succeeded", "failed")
    assert done["status"] == "succeeded" and done["result"] == "logged in"
    assert providers.extra["desktops"].desktop(sid).typed == "hunter2"
    assert "it is hunter2" in fc.last_user_texts(fake.requests[1])
    # The service's compat key belongs to its configured endpoint, never to one a session names.
    assert {r.headers["authorization"] for r in fake.requests} == {"Bearer none"}
