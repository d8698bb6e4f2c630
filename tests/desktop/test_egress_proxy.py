"""The egress policy's matching rules and the proxy itself, with real clients (curl, raw sockets) against
local sites under test host names. No desktop here: tests/desktop/test_egress_desktop.py drives Chromium."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time

import pytest

from deskpilot.errors import PolicyError
from desktop.egress_policy import NetworkPolicy
from desktop.egress_proxy import Blocked, EgressProxy
from tests.support.egress_sites import Site, hosts_map, serve_sites


def decide(allow: list[str], deny: list[str], host: str, ip: str | None = None) -> str | None:
    return NetworkPolicy.from_lists(allow, deny).decide(host, ipaddress.ip_address(ip) if ip else None)


def test_exact_name_is_not_its_subdomains_and_wildcard_is_not_the_apex() -> None:
    assert decide(["example.com"], [], "example.com") is None
    assert decide(["example.com"], [], "www.example.com") == "not_allowed"
    assert decide(["*.example.com"], [], "a.b.example.com") is None
    assert decide(["*.example.com"], [], "example.com") == "not_allowed"
    assert decide(["*.example.com"], [], "badexample.com") == "not_allowed"
    assert decide(["Example.COM."], [], "example.com") is None


def test_block_wins_and_cidrs_match_the_connected_address() -> None:
    assert decide(["*"], ["blocked.test"], "blocked.test") == "deny"
    assert decide(["*.example.com"], ["secret.example.com"], "secret.example.com") == "deny"
    assert decide(["*"], ["10.0.0.0/8"], "intranet.test", "10.1.2.3") == "deny"
    assert decide(["10.0.0.0/8"], [], "anything.test", "10.1.2.3") is None
    assert decide(["10.0.0.0/8"], [], "anything.test", "11.1.2.3") == "not_allowed"
    assert decide(["192.0.2.7"], [], "192.0.2.7", "192.0.2.7") is None


def test_allowing_a_host_never_beats_a_deny() -> None:
    policy = NetworkPolicy.from_lists(["allowed.test"], ["blocked.test"])
    assert policy.allowing("new.test").decide("new.test", None) is None
    assert policy.allowing("blocked.test").decide("blocked.test", None) == "deny"


@pytest.mark.parametrize("spec", [
    {"allow": "example.com"}, {"allow": [""]}, {"allow": [3]}, {"deny": ["ex*ample.com"]}, {"allow": ["10.0.0.0/33"]},
    {"allow": ["a b"]}, {"block": []}, ["example.com"], {"allow": ["x" * 300]},
])
def test_bad_network_policies_are_policy_errors(spec: object) -> None:
    with pytest.raises(PolicyError):
        NetworkPolicy.from_spec(spec, ["*"], [])


def test_left_out_lists_take_the_defaults() -> None:
    policy = NetworkPolicy.from_spec({"deny": ["b.test"]}, ["a.test"], ["c.test"])
    assert policy.to_spec() == {"allow": ["a.test"], "deny": ["b.test"]}


async def curl(proxy: EgressProxy, url: str, *extra: str) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "-m", "30", "-o", "-", "-w", "\n%{http_code}", "-x", f"http://{proxy.address}", *extra, url,
        stdout=asyncio.subprocess.PIPE)
    out = (await proc.communicate())[0].decode()
    body, _, code = out.rpartition("\n")
    return code, body


SITES = (Site("allowed.test", "127.0.0.2"), Site("blocked.test", "127.0.0.3"), Site("other.test", "127.0.0.4"))


async def test_proxy_forwards_allowed_http_and_refuses_the_rest_before_any_connection() -> None:
    seen: list[Blocked] = []
    async with serve_sites(*(Site(s.name, s.address) for s in SITES)) as sites:
        allowed, blocked = sites["allowed.test"], sites["blocked.test"]
        proxy = await EgressProxy(NetworkPolicy.from_lists(["allowed.test"], []), hosts=hosts_map(*sites.values()),
                                  on_blocked=seen.append).start()
        try:
            assert await curl(proxy, f"{allowed.origin}/page?q=1") == ("200", "allowed.test /page?q=1")
            code, body = await curl(proxy, f"{blocked.origin}/secret")
            assert code == "403" and "blocked.test" in body
            # HTTPS goes as CONNECT: refused with the tunnel never opened.
            assert (await curl(proxy, f"https://blocked.test:{blocked.port}/"))[0] == "000"
            # A raw IP literal is not a name on the allow list.
            assert (await curl(proxy, f"http://{blocked.address}:{blocked.port}/ip"))[0] == "403"
            assert blocked.hits == []
            assert allowed.hits == ["GET /page?q=1"]
            assert [(b.host, b.method, b.url) for b in proxy.blocked] == [
                ("blocked.test", "GET", f"{blocked.origin}/secret"), ("blocked.test", "CONNECT", None),
                ("127.0.0.3", "GET", f"http://127.0.0.3:{blocked.port}/ip")]
            # One event per host per interval, however many refusals.
            assert [b.host for b in seen] == ["blocked.test", "127.0.0.3"]
            # Allowed in one step: the next request goes through.
            proxy.allow("blocked.test")
            assert (await curl(proxy, f"{blocked.origin}/now"))[0] == "200"
            assert blocked.hits == ["GET /now"]
        finally:
            await proxy.aclose()


async def test_unknown_names_fail_closed_and_refused_names_are_never_resolved() -> None:
    proxy = await EgressProxy(NetworkPolicy.from_lists(["*"], ["blocked.test"]), hosts={}).start()
    try:
        assert (await curl(proxy, "http://nowhere.test/"))[0] == "502"  # allowed, but no address: no DNS fallback
        assert await proxy.check("blocked.test") == ("deny", None)  # no address: not looked up
    finally:
        await proxy.aclose()


async def raw_websocket(proxy: EgressProxy, site: Site, *, connect: bool) -> bytes:
    """Open a WebSocket to ``site`` through the proxy (CONNECT tunnel or plain-HTTP upgrade); return what came."""
    host, port = proxy.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        target = f"{site.origin}/ws"
        if connect:
            writer.write(f"CONNECT {site.name}:{site.port} HTTP/1.1\r\nHost: {site.name}:{site.port}\r\n\r\n".encode())
            status = await reader.readuntil(b"\r\n\r\n")
            if b" 200 " not in status:
                return status
            target = "/ws"
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {site.name}:{site.port}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        if b" 101 " not in head:
            return head
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC 6455's own example
        frame = await asyncio.wait_for(reader.readexactly(2), 30)
        return await reader.readexactly(frame[1])
    finally:
        writer.close()


async def test_websockets_through_connect_and_plain_http_upgrade() -> None:
    async with serve_sites(Site("allowed.test", "127.0.0.2"), Site("blocked.test", "127.0.0.3")) as sites:
        policy = NetworkPolicy.from_lists(["allowed.test"], [])
        proxy = await EgressProxy(policy, hosts=hosts_map(*sites.values())).start()
        try:
            assert await raw_websocket(proxy, sites["allowed.test"], connect=True) == b"hello from allowed.test"
            assert await raw_websocket(proxy, sites["allowed.test"], connect=False) == b"hello from allowed.test"
            assert b"403" in await raw_websocket(proxy, sites["blocked.test"], connect=True)
            assert b"403" in await raw_websocket(proxy, sites["blocked.test"], connect=False)
            assert sites["blocked.test"].hits == []
        finally:
            await proxy.aclose()


async def test_garbage_gets_400_and_the_proxy_keeps_serving() -> None:
    async with serve_sites(Site("allowed.test", "127.0.0.2")) as sites:
        proxy = await EgressProxy(NetworkPolicy.from_lists(["*"], []), hosts=hosts_map(*sites.values())).start()
        try:
            host, port = proxy.address.rsplit(":", 1)
            for junk in (b"GET / HTTP/1.1\r\n\r\n", b"CONNECT nohostport HTTP/1.1\r\n\r\n", b"\x16\x03\x01junk\r\n\r\n",
                         b"GET ftp://allowed.test/ HTTP/1.1\r\n\r\n", b"CONNECT allowed.test:99999 HTTP/1.1\r\n\r\n"):
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(junk)
                assert (await asyncio.wait_for(reader.read(), 30)).startswith(b"HTTP/1.1 400")
                writer.close()
            assert (await curl(proxy, f"{sites['allowed.test'].origin}/"))[0] == "200"
        finally:
            await proxy.aclose()


async def test_the_origin_sees_the_checked_host_whatever_host_header_came() -> None:
    site = Site("allowed.test", "127.0.0.2")
    async with serve_sites(site) as sites:
        policy = NetworkPolicy.from_lists(["allowed.test"], [])
        proxy = await EgressProxy(policy, hosts=hosts_map(*sites.values())).start()
        try:
            host, port = proxy.address.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET {site.origin}/ HTTP/1.1\r\nHost: evil.test\r\nProxy-Connection: x\r\n\r\n".encode())
            answer = await asyncio.wait_for(reader.read(), 30)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 200")
        finally:
            await proxy.aclose()
    assert site.hits == ["GET /"] and site.host_headers == [f"allowed.test:{site.port}"]


async def test_names_that_never_resolve_hold_up_only_their_own_desktop() -> None:
    """A page (or the model) asking the proxy for names whose lookup hangs must not hold up the service's own
    lookups (the model API's host) nor another desktop's: each proxy resolves on its own few threads."""
    release = threading.Event()

    def hanging(host: str) -> str | None:
        release.wait(30)  # an unanswered DNS server, say
        return None

    slow = await EgressProxy(NetworkPolicy.from_lists(["*"], []), lookup=hanging, resolve_timeout_s=0.5).start()
    other = await EgressProxy(NetworkPolicy.from_lists(["*"], []), lookup=lambda host: "127.0.0.9").start()
    loop = asyncio.get_running_loop()
    try:
        stuck = [asyncio.create_task(slow.check(f"n{i}.test")) for i in range(40)]  # far more than any pool
        await asyncio.sleep(0.05)
        # The loop's shared executor (the service's DNS, asyncio.to_thread) and another desktop's proxy: at once.
        started = time.monotonic()
        assert await asyncio.wait_for(loop.getaddrinfo("127.0.0.1", 80), 2)
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 2) == "free"
        assert await asyncio.wait_for(other.check("fine.test"), 2) == (None, ipaddress.ip_address("127.0.0.9"))
        assert time.monotonic() - started < 2
        # The stuck lookups give up after the proxy's resolve timeout: no address, so a 502, never a hang.
        assert await asyncio.wait_for(asyncio.gather(*stuck), 30) == [(None, None)] * 40
    finally:
        release.set()
        await slow.aclose()
        await other.aclose()
