"""Egress on the docker backend (issue 11 item 1): the desktop container has no network at all
(``network_mode: none``); its only way out is its egress proxy's unix socket in the bind-mounted run
directory, relayed by the daemon to a loopback port. So the policy holds for programs that ignore proxy
variables too: direct addresses, other ports, DNS — there is simply no route.

The sites are on the host's loopback under test names known only to the proxy (``egress_hosts``), which runs
in this process, as it runs in the service.
"""

from __future__ import annotations

import asyncio
import shlex

from desktop.backends.base import DesktopHandle
from tests.container.conftest import MakeBackend, docker_exec
from tests.support.egress_sites import Site, hosts_map, serve_sites

# GET a URL the way most programs do (proxy variables honoured); print the status and the body.
GET = """import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=30); print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code)"""
# Dial an address directly, ignoring any proxy; print what stopped it.
DIAL = """import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10); print("connected")
except socket.gaierror:
    print("gaierror")
except ConnectionRefusedError:
    print("ConnectionRefusedError")
except OSError as e:
    print("OSError", e.errno)"""


def py(script: str, args: str) -> str:
    return f"python3 -c {shlex.quote(script)} {args}"


async def sh(handle: DesktopHandle, command: str) -> tuple[str, int]:
    result = await handle.client.tool("bash", {"command": command})
    assert not result.is_error, result.error
    code = int(result.meta["exit_code"])
    return result.output.removesuffix(f"[exit code {code}]").strip(), code


async def test_the_proxy_is_the_only_way_out(make_backend: MakeBackend, engine: object) -> None:
    allowed, blocked = Site("allowed.test", "127.0.0.2"), Site("blocked.test", "127.0.0.3")
    async with serve_sites(allowed, blocked):
        allowed.pages["/page"] = lambda site, path: ("200 OK", {}, "<title>EGRESS-ALLOWED</title>allowed")
        backend = make_backend(start_url=f"{allowed.origin}/page", docker_network="none",
                               egress_allow=["allowed.test"], egress_deny=[], egress_report_interval_s=0,
                               egress_hosts=hosts_map(allowed, blocked))
        handle = await backend.acquire("egress-docker", 1024, 768)
        proxy = handle.egress
        assert proxy is not None
        container = handle.extra["container"]
        info = engine.containers.get(container).attrs  # type: ignore[attr-defined]
        assert info["HostConfig"]["NetworkMode"] == "none"

        # The browser's start page came through the proxy.
        for _ in range(600):
            if "GET /page" in allowed.hits:
                break
            await asyncio.sleep(0.2)
        assert "GET /page" in allowed.hits

        # The image has no curl: Python's urllib (which honours the proxy variables) and raw sockets instead.
        # Through the proxy (the shell's proxy variables point at the daemon's relay): allowed yes, blocked no.
        assert await sh(handle, py(GET, f"{allowed.origin}/from-bash")) == ("200 allowed.test /from-bash", 0)
        assert await sh(handle, py(GET, f"{blocked.origin}/x")) == ("403", 0)
        # Around it: no DNS, no route to any address, the host's loopback is not the container's.
        assert await sh(handle, py(DIAL, f"{blocked.name} {blocked.port}")) == ("gaierror", 0)
        refused = ("ConnectionRefusedError", 0)
        assert await sh(handle, py(DIAL, f"{blocked.address} {blocked.port}")) == refused
        assert await sh(handle, py(DIAL, "192.0.2.1 80")) == ("OSError 101", 0)  # ENETUNREACH
        code, out = docker_exec(engine, container, "cat", "/proc/net/route")
        assert code == 0 and len(out.strip().splitlines()) == 1, out  # a header, no route
        assert blocked.hits == []
        assert {(b.host, b.method) for b in proxy.blocked} >= {("blocked.test", "GET")}

        # Allowed for the session on the running proxy: the next request goes through.
        proxy.allow("blocked.test")
        assert await sh(handle, py(GET, f"{blocked.origin}/after")) == ("200 blocked.test /after", 0)
        await backend.release(handle)
