"""REST contract against a real server: auth, ownership, shapes, limits."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.web.conftest import Service, start_service, stop_service


def new_session(c: httpx.Client, task: str = "open example.org") -> dict[str, object]:
    r = c.post("/api/sessions", json={"task": task, "max_steps": 3, "screen": {"width": 800, "height": 600}})
    assert r.status_code == 201, r.text
    body: dict[str, object] = r.json()
    return body


def test_healthz_needs_no_token_and_says_tasks_can_run(service: Service) -> None:
    r = httpx.get(service.url + "/healthz")
    assert r.status_code == 200
    assert r.json() == {"ok": True, "tasks_can_run": True, "reason": None}


def test_missing_or_bad_token_is_401_in_one_shape(service: Service) -> None:
    for headers in ({}, {"Authorization": "Bearer dp_nope"}, {"Authorization": "Basic abc"}):
        for method, path in [("GET", "/api/sessions"), ("POST", "/api/sessions"), ("GET", "/metrics"),
                             ("GET", "/api/sessions/x/events"), ("POST", "/api/sessions/x/cancel")]:
            r = httpx.request(method, service.url + path, headers=headers, json={"task": "t"})
            assert r.status_code == 401, (method, path, r.text)
            body = r.json()
            assert body["ok"] is False and body["status"] == 401 and "token" in body["error"]


def test_create_get_list_and_event_log(service: Service) -> None:
    with service.client("alice") as c:
        s = new_session(c)
        assert s["status"] == "queued" and s["task"] == "open example.org"
        assert s["screen"] == {"width": 800, "height": 600} and s["control"] == "agent"
        assert s["usage"] == {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
        got = c.get(f"/api/sessions/{s['id']}").json()
        assert got["id"] == s["id"]
        events = c.get(f"/api/sessions/{s['id']}/events").json()
        assert events["items"][0]["seq"] == 1
        assert events["items"][0]["type"] == "status" and events["items"][0]["data"]["status"] == "queued"
        seqs = [e["seq"] for e in events["items"]]
        assert seqs == list(range(1, len(seqs) + 1))
        later = [e["seq"] for e in c.get(f"/api/sessions/{s['id']}/events", params={"after": 1}).json()["items"]]
        assert later[: len(seqs) - 1] == seqs[1:] and later == list(range(2, len(later) + 2))  # it runs meanwhile
        others = [new_session(c) for _ in range(2)]
        page = c.get("/api/sessions", params={"limit": 2, "offset": 0}).json()
        assert page["total"] == 3 and len(page["items"]) == 2
        rest = c.get("/api/sessions", params={"limit": 2, "offset": 2}).json()
        assert len(rest["items"]) == 1
        ids = {x["id"] for x in page["items"]} | {x["id"] for x in rest["items"]}
        assert s["id"] in ids and len(ids) == 3
        assert c.get("/api/sessions", params={"status": "bogus"}).status_code == 422
        for one in [s, *others]:  # no need for their desktops
            assert c.post(f"/api/sessions/{one['id']}/cancel").status_code in (200, 409)
        assert c.get("/api/sessions", params={"status": "cancelled"}).json()["total"] >= 1


def test_other_owner_sees_nothing(service: Service) -> None:
    with service.client("alice") as a, service.client("bob") as b:
        s = new_session(a)
        sid = s["id"]
        assert b.get("/api/sessions").json()["total"] == 0
        for method, path, body in [
            ("GET", f"/api/sessions/{sid}", None),
            ("GET", f"/api/sessions/{sid}/events", None),
            ("GET", f"/api/sessions/{sid}/screenshots/{'a' * 64}.png", None),
            ("POST", f"/api/sessions/{sid}/messages", {"text": "hi"}),
            ("POST", f"/api/sessions/{sid}/pause", None),
            ("POST", f"/api/sessions/{sid}/resume", None),
            ("POST", f"/api/sessions/{sid}/cancel", None),
            ("POST", f"/api/sessions/{sid}/approvals/ap1", {"decision": "approve"}),
            ("POST", f"/api/sessions/{sid}/takeover", None),
            ("POST", f"/api/sessions/{sid}/handback", {"note": "x"}),
        ]:
            r = b.request(method, path, json=body)
            assert r.status_code == 404, (method, path, r.status_code, r.text)
            assert r.json()["error"].startswith("session ")
        # Its owner still reaches it: cancelled now, or 409 when its desktop start (refused outside the desktop
        # tier) has already ended it.
        assert a.post(f"/api/sessions/{sid}/cancel").status_code in (200, 409)


def test_login_sets_httponly_strict_cookie_that_authenticates(service: Service) -> None:
    with httpx.Client(base_url=service.url) as c:
        assert c.post("/api/login", json={"token": "dp_wrong"}).status_code == 401
        r = c.post("/api/login", json={"token": service.tokens["bob"]})
        assert r.status_code == 200
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert c.get("/api/me").json() == {"owner": "bob"}
        c.post("/api/logout")
        assert c.get("/api/me").status_code == 401


def test_limits_body_size_and_validation(service: Service) -> None:
    with service.client("alice") as c:
        r = c.post("/api/sessions", content=b'{"task": "' + b"x" * 2_000_000 + b'"}',
                   headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["ok"] is False
        r = c.post("/api/sessions", json={"task": ""})
        assert r.status_code == 422 and r.json()["details"]
        r = c.post("/api/sessions", json={"task": "x", "unknown": 1})
        assert r.status_code == 422


def test_metrics_are_prometheus_text(service: Service) -> None:
    with service.client("alice") as c:
        r = c.get("/metrics")
        assert r.status_code == 200 and "deskpilot_viewers" in r.text


def test_without_api_key_the_service_runs_and_says_why_tasks_cannot(tmp_path: Path) -> None:
    svc = start_service(tmp_path / "d", anthropic_api_key=None)
    try:
        health = httpx.get(svc.url + "/healthz").json()
        assert health["tasks_can_run"] is False and "ANTHROPIC_API_KEY" in health["reason"]
        with svc.client("alice") as c:
            r = c.post("/api/sessions", json={"task": "anything"})
            assert r.status_code == 503 and "ANTHROPIC_API_KEY" in r.json()["error"]
            assert c.get("/api/sessions").status_code == 200
    finally:
        stop_service(svc)


def test_rate_limit_per_token(tmp_path: Path) -> None:
    svc = start_service(tmp_path / "d", rate_limit_per_minute=5)
    try:
        with svc.client("alice") as a, svc.client("bob") as b:
            codes = [a.get("/api/sessions").status_code for _ in range(7)]
            assert codes[:5] == [200] * 5 and codes[-1] == 429
            assert a.get("/api/sessions").json()["error"].startswith("rate limit")
            assert b.get("/api/sessions").status_code == 200  # per token, not global
    finally:
        stop_service(svc)
