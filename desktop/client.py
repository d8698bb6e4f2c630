"""Client of one desktop daemon, over loopback TCP or a unix socket.

The agent talks to a desktop only through this (or anything with the same ``tool()``). A daemon that is
unreachable or answers 503 raises ``DesktopLostError``; a call the daemon rejects as malformed (400) or an
unknown tool (404) comes back as an error ``ToolResult`` so the model sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import connect, unix_connect

from deskpilot.errors import DesktopError, DesktopLostError
from desktop.tools.base import ToolResult

_UDS_BASE_URL = "http://desktop"  # the host part is ignored over a unix socket


@dataclass(frozen=True, slots=True)
class DesktopInfo:
    display: str
    screen_width: int
    screen_height: int
    model_width: int
    model_height: int
    os: str = ""
    browser: str = ""
    components: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)  # process (group) of each component, for operators

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DesktopInfo:
        return cls(display=str(data["display"]), screen_width=int(data["screen"]["width"]),
                   screen_height=int(data["screen"]["height"]), model_width=int(data["model_screen"]["width"]),
                   model_height=int(data["model_screen"]["height"]), os=str(data.get("os", "")),
                   browser=str(data.get("browser", "")), components=dict(data.get("components") or {}),
                   pids={k: int(v) for k, v in (data.get("pids") or {}).items() if v is not None})


@dataclass(frozen=True, slots=True)
class DesktopEndpoint:
    """How another process reaches a daemon: its URL (TCP) or unix socket path, and its bearer token.

    The token is left out of ``repr`` so that logging an endpoint never leaks it.
    """

    token: str = field(repr=False)
    base_url: str | None = None
    uds: str | None = None
    vnc: bool = True  # the daemon runs a VNC server (``DesktopHandle.vnc_available``)

    def to_json(self) -> dict[str, Any]:
        return {"token": self.token, "base_url": self.base_url, "uds": self.uds, "vnc": self.vnc}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DesktopEndpoint:
        base_url, uds = data.get("base_url"), data.get("uds")
        if not isinstance(data.get("token"), str) or (base_url is None) == (uds is None):
            raise ValueError("a desktop endpoint needs a token and exactly one of base_url or uds")
        return cls(token=data["token"], base_url=base_url, uds=uds, vnc=bool(data.get("vnc", True)))


class DesktopClient:
    """``DesktopClient(base_url="http://127.0.0.1:N", token=...)`` or ``DesktopClient(uds="/p/daemon.sock", ...)``."""

    def __init__(self, base_url: str | None = None, *, uds: str | None = None, token: str,
                 timeout_s: float) -> None:
        if (base_url is None) == (uds is None):
            raise ValueError("give exactly one of base_url or uds")
        self.base_url = base_url or _UDS_BASE_URL
        self.uds = uds
        self._token = token
        # ``timeout_s``: how long a call may take; a bash call runs up to its own timeout, so owners pass
        # ``settings.bash_timeout_s`` plus some slack.
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers={"Authorization": f"Bearer {token}"},
            transport=httpx.AsyncHTTPTransport(uds=uds) if uds else None,
            timeout=httpx.Timeout(timeout_s, connect=5.0),
        )

    def __repr__(self) -> str:
        return f"DesktopClient({self.uds or self.base_url!r})"

    @classmethod
    def to(cls, endpoint: DesktopEndpoint, *, timeout_s: float) -> DesktopClient:
        """A client of the daemon another process started (another replica's desktop)."""
        return cls(endpoint.base_url, uds=endpoint.uds, token=endpoint.token, timeout_s=timeout_s)

    def endpoint(self, *, vnc: bool = True) -> DesktopEndpoint:
        """What another process needs to reach this daemon (``DesktopClient.to``)."""
        return DesktopEndpoint(token=self._token, base_url=None if self.uds else self.base_url, uds=self.uds,
                               vnc=vnc)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self._http.is_closed:
            raise DesktopLostError("desktop client is closed (the desktop was released)")
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise DesktopLostError(f"desktop daemon unreachable: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 503:
            raise DesktopLostError(_error_of(response) or "desktop lost")
        if response.status_code == 401:
            raise DesktopError("desktop daemon rejected the token")
        return response

    async def tool(self, name: str, input: dict[str, Any], *, version: str = "computer_20250124") -> ToolResult:
        response = await self._request("POST", f"/tools/{name}", json={"input": input, "version": version})
        if response.status_code in (400, 404, 413):
            return ToolResult(error=_error_of(response) or f"rejected by the desktop ({response.status_code})")
        if response.status_code != 200:
            raise DesktopError(f"desktop daemon answered {response.status_code} to {name}")
        return ToolResult.from_json(response.json())

    async def screenshot(self, *, version: str = "computer_20250124") -> ToolResult:
        return await self.tool("computer", {"action": "screenshot"}, version=version)

    async def info(self) -> DesktopInfo:
        response = await self._request("GET", "/info")
        response.raise_for_status()
        return DesktopInfo.from_json(response.json())

    async def frame(self, etag: str | None = None, *, quality: int = 60,
                    max_width: int = 1024) -> tuple[bytes, str] | None:
        """``(jpeg, etag)`` of the screen now, or None when it still matches ``etag``."""
        headers = {"If-None-Match": etag} if etag else {}
        response = await self._request("GET", "/frame", params={"quality": quality, "max_width": max_width},
                                       headers=headers)
        if response.status_code == 304:
            return None
        response.raise_for_status()
        return response.content, response.headers.get("etag", "")

    async def active_window(self) -> dict[str, Any]:
        """``{"title": str | None, "id": int | None}`` of the focused top-level window."""
        response = await self._request("GET", "/window")
        response.raise_for_status()
        data = response.json()
        title, wid = data.get("title"), data.get("id")
        return {"title": title if isinstance(title, str) else None, "id": wid if isinstance(wid, int) else None}

    async def active_window_title(self) -> str | None:
        """The focused window's title, or None when no window is active (the approval policy's window rules)."""
        title: str | None = (await self.active_window())["title"]
        return title

    async def active_tab_url(self) -> str | None:
        """The URL of the browser tab on screen, or None without a browser (the approval policy's URL rules).
        Read over the daemon's private DevTools pipe (``desktop.browser_query``), so a page cannot fake it."""
        response = await self._request("POST", "/browser/query", json={"query": "url"})
        value = response.json().get("value") if response.status_code == 200 else None
        return value if isinstance(value, str) else None

    async def healthz(self) -> bool:
        """True when the desktop is up; False when the daemon says it is lost or cannot be reached."""
        if self._http.is_closed:
            return False
        try:
            response = await self._http.get("/healthz", timeout=5.0)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def vnc_connect(self, view_only: bool) -> connect:
        """A websockets connection to the daemon's VNC bridge: ``async with client.vnc_connect(True) as ws``."""
        query = "?view_only=1" if view_only else ""
        headers = {"Authorization": f"Bearer {self._token}"}
        if self.uds:
            return unix_connect(self.uds, f"ws://desktop/vnc{query}", additional_headers=headers,
                                max_size=None, compression=None, proxy=None)
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return connect(f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/vnc{query}",
                       additional_headers=headers, max_size=None, compression=None, proxy=None)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> DesktopClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _error_of(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    return str(data.get("error") or "") if isinstance(data, dict) else ""
