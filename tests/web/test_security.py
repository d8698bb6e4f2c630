"""Issue 11 §6, tried as an attacker would: cross-origin state changes, response headers, chunked bodies."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.web.conftest import Service
from web.auth import COOKIE_NAME


@pytest.fixture
def browser(service: Service) -> Iterator[httpx.Client]:
    """Alice's browser: logged in with the session cookie, no bearer header."""
    with httpx.Client(base_url=service.url, timeout=30) as c:
        assert c.post("/api/login", json={"token": service.tokens["alice"]}).status_code == 200
        yield c


def stored_session(service: Service, owner: str = "alice") -> str:
    """A session row straight in the store (no run starts), with one screenshot in its event log."""
    store = service.app.state.store

    async def make() -> str:
        row = await store.create_session(owner=owner, task="t", model="m", policy={}, max_steps=1,
                                         width=800, height=600)
        ref = store.save_image(b"\x89PNG\r\n\x1a\n" + b"0" * 64, "image/png")
        await store.append_event(row.id, "tool_result", {"tool_use_id": "t1"}, image_ref=ref)
        return str(row.id)

    sid: str = service.call(make())
    return sid


def test_cookie_state_changes_from_another_origin_are_refused(service: Service, browser: httpx.Client) -> None:
    sid = stored_session(service)
    before = browser.get(f"/api/sessions/{sid}").json()["status"]
    port = service.url.rsplit(":", 1)[1]
    foreign = ["http://evil.example", f"http://127.0.0.1:{int(port) + 1}", "null", f"http://localhost:{port}"]
    for origin in foreign:  # another port of the same host is another origin, too
        r = browser.post(f"/api/sessions/{sid}/cancel", headers={"Origin": origin})
        assert r.status_code == 403, (origin, r.status_code, r.text)
        assert "cross-origin" in r.json()["error"]
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Referer": "http://evil.example/page"}, {"Origin": "http://["}, {"Referer": "http://[x"}):
        assert browser.post(f"/api/sessions/{sid}/pause", headers=headers).status_code == 403, headers
    evil = {"Origin": "http://evil.example"}
    assert browser.post("/api/sessions", json={"task": "x"}, headers=evil).status_code == 403
    with service.client("alice") as api:
        assert api.get(f"/api/sessions/{sid}").json()["status"] == before != "cancelled"  # no route was reached
        assert api.get("/api/sessions").json()["total"] == 1
    # the service's own page may act
    r = browser.post(f"/api/sessions/{sid}/cancel", headers={"Origin": service.url, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code in (200, 409), r.text
    # reads are not state changes
    assert browser.get("/api/me", headers={"Origin": "http://evil.example"}).status_code == 200


def test_a_cross_origin_login_or_logout_is_refused(service: Service, browser: httpx.Client) -> None:
    evil = {"Origin": "http://evil.example"}
    with httpx.Client(base_url=service.url, timeout=30) as victim:
        r = victim.post("/api/login", json={"token": service.tokens["bob"]}, headers=evil)
        assert r.status_code == 403 and COOKIE_NAME not in r.cookies
    assert browser.post("/api/logout", headers=evil).status_code == 403
    assert browser.get("/api/me").json() == {"owner": "alice"}


def test_bearer_requests_are_judged_by_the_token_alone(service: Service) -> None:
    sid = stored_session(service)
    with service.client("alice") as api:
        r = api.post(f"/api/sessions/{sid}/cancel", headers={"Origin": "http://evil.example"})
        assert r.status_code in (200, 409), r.text
        assert r.status_code != 403


def header_set(r: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in r.headers.items()}


def test_api_responses_are_not_cached_or_sniffed(service: Service, browser: httpx.Client) -> None:
    sid = stored_session(service)
    for r in (browser.get("/api/sessions"), browser.get(f"/api/sessions/{sid}"), browser.get("/api/me"),
              httpx.get(service.url + "/api/sessions"), browser.get("/api/sessions/nope"),
              browser.post("/api/sessions", json={"task": ""}, headers={"Origin": service.url})):
        h = header_set(r)
        assert h["cache-control"] == "no-store", (r.request.url, h)
        assert h["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in h["content-security-policy"]
    events = browser.get(f"/api/sessions/{sid}/events").json()["items"]
    image = next(e["image"] for e in events if e["image"])
    shot = browser.get(f"/api/sessions/{sid}/screenshots/{image}")
    assert shot.status_code == 200 and shot.headers["content-type"] == "image/png"
    assert shot.headers["cache-control"] == "private, no-store"
    assert shot.headers["x-content-type-options"] == "nosniff"


def test_docs_and_ui_pages_carry_a_csp_and_cannot_be_framed(service: Service) -> None:
    for path in ("/docs", "/redoc", "/"):
        r = httpx.get(service.url + path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
        assert "'unsafe-inline'" not in directives.get("script-src", directives["default-src"]), (path, csp)
    docs = httpx.get(service.url + "/docs")
    inline = re.findall(r"<script>(.*?)</script>", docs.text, re.DOTALL)
    assert inline, "Swagger UI's inline bootstrap script"
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in docs.headers["content-security-policy"]
    assert httpx.get(service.url + "/openapi.json").json()["info"]["title"] == "deskpilot"


def test_an_oversized_chunked_body_is_413(service: Service) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"task": "'
        for _ in range(40):
            yield b"x" * 65_536
        yield b'"}'

    with service.client("alice") as api:
        r = api.post("/api/sessions", content=chunks(), headers={"content-type": "application/json"})
        assert r.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.request.headers
        assert r.status_code == 413, r.text
        assert r.json() == {"ok": False, "error": f"request body over {service.settings.max_body_bytes} bytes",
                            "status": 413}

    def small() -> Iterator[bytes]:
        yield b'{"task": '
        yield b'""}'

    with service.client("alice") as api:  # a small chunked body still reaches the route (422: empty task)
        r = api.post("/api/sessions", content=small(), headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["details"]
