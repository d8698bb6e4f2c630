"""Issue 11 §6: browser logins are server-side sessions, and failed logins are throttled per address.

Each test plays the attacker against a real server: replaying a cookie after logout, after
``deskpilot token revoke``, after a fresh login, after expiry; guessing tokens as fast as it can.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.cli import deskpilot
from tests.web.conftest import Service, start_service, stop_service
from web.auth import COOKIE_NAME
from web.limits import address_key


@contextmanager
def logged_in(service: Service, who: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30) as c:
        r = c.post("/api/login", json={"token": service.tokens[who]})
        assert r.status_code == 200, r.text
        yield c


def as_cookie(service: Service, secret: str) -> httpx.Client:
    """A fresh client that presents only this cookie value (the attacker's copy of it)."""
    return httpx.Client(base_url=service.url, timeout=30, cookies={COOKIE_NAME: secret})


def test_the_cookie_is_a_random_session_not_the_token(service: Service) -> None:
    with logged_in(service, "bob") as c:
        secret = c.cookies[COOKIE_NAME]
        assert service.tokens["bob"] not in secret and not secret.startswith("dp_")
        assert len(secret) >= 40
        assert c.get("/api/me").json() == {"owner": "bob"}


def test_logout_ends_the_session_for_a_copied_cookie(service: Service) -> None:
    with logged_in(service, "bob") as c:
        stolen = c.cookies[COOKIE_NAME]
        with as_cookie(service, stolen) as thief:
            assert thief.get("/api/me").status_code == 200
            assert c.post("/api/logout").status_code == 200
            r = thief.get("/api/me")
            assert r.status_code == 401 and "log in again" in r.json()["error"]
            assert thief.get("/api/sessions").status_code == 401
        assert c.get("/api/me").status_code == 401
    with service.client("bob") as api:  # the token itself is untouched by a logout
        assert api.get("/api/me").json() == {"owner": "bob"}
    audit = service.call(service.app.state.store.list_audit("bob"))
    assert [(a.action, a.actor, a.address) for a in audit] == [("logout", "bob", "127.0.0.1"),
                                                                ("login", "bob", "127.0.0.1")]


def test_a_new_login_rotates_the_session(service: Service) -> None:
    with logged_in(service, "alice") as c:
        first = c.cookies[COOKIE_NAME]
        assert c.post("/api/login", json={"token": service.tokens["alice"]}).status_code == 200
        second = c.cookies[COOKIE_NAME]
        assert second != first
        with as_cookie(service, first) as old, as_cookie(service, second) as new:
            assert old.get("/api/me").status_code == 401
            assert new.get("/api/me").json() == {"owner": "alice"}


def test_token_revoke_ends_its_browser_sessions(service: Service) -> None:
    with logged_in(service, "bob") as bob, logged_in(service, "alice") as alice:
        env = {**os.environ, "DESKPILOT_DATA_DIR": str(service.settings.data_dir)}
        done = deskpilot("token", "revoke", "bob", env=env)
        assert done.exit_code == 0, done.stderr
        assert bob.get("/api/me").status_code == 401
        assert bob.post("/api/login", json={"token": service.tokens["bob"]}).status_code == 401
        assert alice.get("/api/me").json() == {"owner": "alice"}  # other tokens' sessions live on


def test_a_session_expires(tmp_path: Path) -> None:
    svc = start_service(tmp_path / "d", login_session_hours=1.5 / 3600)
    try:
        with logged_in(svc, "alice") as c:
            again = c.post("/api/login", json={"token": svc.tokens["alice"]})
            assert "max-age=1;" in again.headers["set-cookie"].lower()
            secret = c.cookies[COOKIE_NAME]
            with as_cookie(svc, secret) as replay:
                assert replay.get("/api/me").status_code == 200
                time.sleep(2.0)
                assert replay.get("/api/me").status_code == 401
    finally:
        stop_service(svc)


def test_failed_logins_are_throttled_per_address(tmp_path: Path) -> None:
    svc = start_service(tmp_path / "d", login_failures_per_minute=6, login_failures_burst=5)
    try:
        attacker = httpx.Client(base_url=svc.url, timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        user = httpx.Client(base_url=svc.url, timeout=30, transport=httpx.HTTPTransport(local_address="127.0.0.3"))
        with attacker, user:
            codes = [attacker.post("/api/login", json={"token": f"dp_guess{i}"}).status_code for i in range(8)]
            assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}, codes
            r = attacker.get("/api/sessions", headers={"Authorization": "Bearer dp_guess-more"})
            assert r.status_code == 429 and r.json()["error"].startswith("too many failed logins")
            assert 1 <= int(r.headers["Retry-After"]) <= 10
            # while throttled even a right token is refused, so guessing cannot go on at full speed
            assert attacker.post("/api/login", json={"token": svc.tokens["alice"]}).status_code == 429
            # the attacker does not lock out a user at another address
            assert user.post("/api/login", json={"token": svc.tokens["alice"]}).status_code == 200
            assert user.get("/api/me").json() == {"owner": "alice"}
            with svc.client("bob") as bob:  # 127.0.0.1
                assert bob.get("/api/me").status_code == 200
        # no credential at all (a browser before it logs in) is not a failed login
        with httpx.Client(base_url=svc.url, timeout=30,
                          transport=httpx.HTTPTransport(local_address="127.0.0.4")) as anonymous:
            assert {anonymous.get("/api/me").status_code for _ in range(12)} == {401}
            assert anonymous.post("/api/login", json={"token": svc.tokens["bob"]}).status_code == 200
    finally:
        stop_service(svc)


def test_failures_are_counted_per_ipv4_address_and_per_ipv6_64() -> None:
    assert address_key("203.0.113.7") == "203.0.113.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_key(None) == "unknown" and address_key("testclient") == "testclient"
