"""The desktop's filtering forward proxy: HTTP CONNECT tunnels (HTTPS, WebSockets) and plain HTTP forwarding,
allowed only to the session's policy (``desktop/egress_policy.py``), failing closed.

Why a small asyncio proxy rather than tinyproxy or squid: the policy changes while a session runs (the user
allows a domain in one click) and every refusal must reach the session as an event at once. tinyproxy and
squid take their filters from files re-read on a signal and report refusals only in their logs, so either
would need a reload protocol and a log tailer around it; this is ~250 lines on the standard library.

DNS is the proxy's: the desktop's programs never resolve a destination (Chromium maps every name to
NOTFOUND except the proxy's address). A name the policy refuses by name is never looked up, so a page cannot
leak data through DNS queries either. The address checked is the address connected to (no second lookup).
Each proxy resolves on its own few threads, never the event loop's shared executor: a desktop whose names
resolve slowly (or never) waits alone, instead of holding up the service's own lookups (the model API's
host) and every other session's. Measured in the compose stack before this: Chromium's background lookups
through the proxy, unanswerable there, delayed every model request by 10 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from deskpilot.settings import Settings
from desktop.egress_policy import IPAddress, NetworkPolicy, normalize_host, parse_ip

log = logging.getLogger(__name__)

_HEAD_LIMIT = 64 * 1024
_HEAD_TIMEOUT_S = 30.0
_CONNECT_TIMEOUT_S = 15.0
_DRAIN_GRACE_S = 10.0  # after one direction ends, how long the other may still run
_RESOLVE_TIMEOUT_S = 10.0  # glibc's default: two tries of 5 s
_RESOLVER_THREADS = 4  # per proxy, so per desktop; created only when lookups come
_HOP_BY_HOP = {"proxy-connection", "proxy-authorization", "keep-alive", "connection"}


def system_lookup(host: str) -> str | None:
    """The first address of ``host`` by the system resolver (blocking: runs on a proxy's own threads)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return None
    return str(infos[0][4][0]) if infos else None


@dataclass(frozen=True, slots=True)
class Blocked:
    """One refused request. ``url`` is known for plain HTTP only (a CONNECT tunnel shows host and port)."""

    host: str
    port: int
    method: str
    url: str | None
    reason: str  # deny | not_allowed
    ts: float


class BadRequestLine(ValueError):
    pass


def _response(status: str, body: str, *extra: str) -> bytes:
    data = body.encode()
    head = [f"HTTP/1.1 {status}", "Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(data)}",
            "Connection: close", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def parse_target(method: str, target: str) -> tuple[str, int, str]:
    """(host, port, origin-form path) of a proxy request; raises ``BadRequestLine``."""
    try:
        if method == "CONNECT":
            host, sep, port_text = target.rpartition(":")
            if not sep or not host:
                raise BadRequestLine("CONNECT needs host:port")
            port = int(port_text)
            path = ""
        else:
            parts = urlsplit(target)
            if parts.scheme != "http" or not parts.hostname:
                raise BadRequestLine("only absolute http:// URLs (use CONNECT for anything else)")
            host, port = parts.hostname, parts.port or 80
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not 0 < port < 65536:
            raise BadRequestLine("bad port")
        return normalize_host(host), port, path
    except ValueError as exc:  # PolicyError and int() both are ValueErrors
        raise BadRequestLine(str(exc)) from exc


class EgressProxy:
    """One desktop's proxy. ``set_policy``/``allow`` take effect for the next request; tunnels already open
    stay open (a policy change does not cut a page's connection in the middle of a response)."""

    def __init__(self, policy: NetworkPolicy, *, hosts: Mapping[str, str] | None = None,
                 listen_host: str = "127.0.0.1", listen_port: int = 0, listen_uds: str | None = None,
                 report_interval_s: float = 10.0,
                 on_blocked: Callable[[Blocked], None] | None = None, keep: int = 1000,
                 lookup: Callable[[str], str | None] = system_lookup,
                 resolve_timeout_s: float = _RESOLVE_TIMEOUT_S) -> None:
        self.policy = policy
        self.lookup, self.resolve_timeout_s = lookup, resolve_timeout_s
        self._resolver: ThreadPoolExecutor | None = None
        # A fixed name→address map replaces DNS entirely when given (tests; an operator's pinned hosts).
        self.hosts = {normalize_host(k): v for k, v in hosts.items()} if hosts else None
        self.listen_host, self.listen_port = listen_host, listen_port
        # A unix socket instead of a port: the docker backend's desktop has no network, only this socket in
        # its bind-mounted run directory, which its daemon relays to a loopback port (desktop/egress_relay.py).
        self.listen_uds = listen_uds
        # Who may use it, by peer address: None admits whoever reaches it (loopback, a unix socket). A proxy
        # listening on a pod network admits only its own desktop's address (the cluster backends).
        self.clients: frozenset[str] | None = None
        self.report_interval_s = report_interval_s
        self.on_blocked = on_blocked
        self.blocked: deque[Blocked] = deque(maxlen=keep)
        self._reported: dict[str, float] = {}
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # --- control ---
    async def start(self) -> EgressProxy:
        if self.listen_uds is not None:
            self._server = await asyncio.start_unix_server(self._handle, self.listen_uds, limit=_HEAD_LIMIT)
            return self
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.listen_port,
                                                  limit=_HEAD_LIMIT)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        """``host:port`` for ``--proxy-server`` and ``http_proxy``."""
        return f"{self.listen_host}:{self.listen_port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def set_policy(self, policy: NetworkPolicy) -> None:
        self.policy = policy
        self._reported.clear()

    def allow(self, host: str) -> str:
        """Allow ``host`` from now on (a ``deny`` entry still wins); returns its normalized form."""
        self.policy = self.policy.allowing(host)
        name = normalize_host(host)
        self._reported.pop(name, None)
        return name

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None
        if self._resolver is not None:  # a lookup still stuck in the resolver ends on its own; nobody waits
            self._resolver.shutdown(wait=False, cancel_futures=True)
            self._resolver = None

    # --- decisions ---
    async def _resolve(self, host: str) -> IPAddress | None:
        literal = parse_ip(host)
        if literal is not None:
            return literal
        if self.hosts is not None:
            return parse_ip(self.hosts.get(host, ""))
        if self._resolver is None:
            self._resolver = ThreadPoolExecutor(_RESOLVER_THREADS, thread_name_prefix="egress-dns")
        lookup = asyncio.get_running_loop().run_in_executor(self._resolver, self.lookup, host)
        try:
            found = await asyncio.wait_for(lookup, self.resolve_timeout_s)
        except TimeoutError:
            log.info("egress: resolving %s took over %.0f s", host, self.resolve_timeout_s)
            return None
        return parse_ip(found or "")

    async def check(self, host: str) -> tuple[str | None, IPAddress | None]:
        """(reason it is blocked or None, the address to connect to)."""
        policy = self.policy
        early = policy.decide(host, None)
        # Refused by name alone: never resolved. Only an allow CIDR can still admit a name not listed.
        if early == "deny" or (early == "not_allowed" and not policy.allow.networks):
            return early, None
        address = await self._resolve(host)
        if address is None:
            return (early, None) if early else (None, None)
        return policy.decide(host, address), address

    def _block(self, host: str, port: int, method: str, url: str | None, reason: str) -> None:
        item = Blocked(host, port, method, url, reason, time.time())
        self.blocked.append(item)
        log.info("egress blocked: %s %s:%d (%s)", method, host, port, reason)
        now = time.monotonic()
        last = self._reported.get(host)
        if self.on_blocked is not None and (last is None or now - last >= self.report_interval_s):
            self._reported[host] = now
            self.on_blocked(item)

    # --- one client connection ---
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.clients is None or _peer(writer) in self.clients:
                await self._serve(reader, writer)
            else:
                log.warning("egress proxy on port %d refused a connection from %s", self.listen_port, _peer(writer))
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT_S)
        lines = head.decode("latin-1").split("\r\n")
        request = lines[0].split(" ")
        if len(request) != 3 or not request[2].startswith("HTTP/1."):
            writer.write(_response("400 Bad Request", "not an HTTP/1 proxy request\n"))
            return
        method, target, version = request
        try:
            host, port, path = parse_target(method, target)
        except BadRequestLine as exc:
            writer.write(_response("400 Bad Request", f"{exc}\n"))
            return
        reason, address = await self.check(host)
        url = None if method == "CONNECT" else target
        if reason is not None:
            self._block(host, port, method, url, reason)
            writer.write(_response("403 Forbidden", f"blocked by the session's network policy: {host}\n",
                                   "X-Deskpilot-Egress: blocked"))
            return
        if address is None:
            writer.write(_response("502 Bad Gateway", f"cannot resolve {host}\n"))
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(str(address), port),
                                                          _CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError):
            writer.write(_response("502 Bad Gateway", f"cannot connect to {host}:{port}\n"))
            return
        try:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            else:
                authority = host if port == 80 else f"{host}:{port}"
                up_writer.write(_forward_head(method, path, version, lines[1:], authority))
            await splice(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()


def _forward_head(method: str, path: str, version: str, header_lines: list[str], authority: str) -> bytes:
    """The request as the origin sees it: origin-form target, no proxy headers, ``Host`` the checked host (a
    different ``Host`` could reach another site sharing the allowed one's address); one request per upstream
    connection (``Connection: close``) unless it is an upgrade (WebSocket over plain HTTP)."""
    headers = [line for line in header_lines if line]
    upgrade = any(line.lower().startswith("upgrade:") for line in headers)
    kept = [line for line in headers
            if line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP | {"host"}]
    kept.insert(0, f"Host: {authority}")
    kept.append("Connection: Upgrade" if upgrade else "Connection: close")
    return (f"{method} {path} {version}\r\n" + "".join(f"{h}\r\n" for h in kept) + "\r\n").encode("latin-1")


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def splice(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                  b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> None:
    """Copy both ways until both ends are done (or one is done and the other idles past a grace period)."""
    tasks = {asyncio.create_task(_pump(a_reader, b_writer)), asyncio.create_task(_pump(b_reader, a_writer))}
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if pending:
            await asyncio.wait(pending, timeout=_DRAIN_GRACE_S)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def start_proxy(settings: Settings, *, listen_uds: str | None = None, listen_host: str = "127.0.0.1",
                listen_port: int = 0) -> EgressProxy:
    """A desktop's proxy (not yet started) with the settings' default policy; the session narrows or widens it
    once it runs."""
    policy = NetworkPolicy.from_lists(settings.egress_allow, settings.egress_deny)
    return EgressProxy(policy, hosts=settings.egress_hosts or None, listen_uds=listen_uds, listen_host=listen_host,
                       listen_port=listen_port, report_interval_s=settings.egress_report_interval_s)


# --- how the desktop's programs are pointed at it ---
def browser_proxy_args(proxy: str) -> list[str]:
    """Chromium's own second layer: every URL through the proxy, loopback included (``<-loopback>``), and no
    name resolution of its own (every name NOTFOUND except the proxy host)."""
    host = proxy.rsplit(":", 1)[0]
    return [f"--proxy-server=http://{proxy}", "--proxy-bypass-list=<-loopback>",
            f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {host}"]
