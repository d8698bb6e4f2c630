"""Read (and, for a task's setup, navigate) the desktop's browser over the daemon's private DevTools pipe.

Evaluation needs to know what the browser shows after the agent finished — the active tab's URL and title,
a selector's text or value, localStorage, cookies (HttpOnly ones too), the clipboard — from outside the model's
reach: the pipe belongs to the daemon alone (``desktop.browser_signal``), so neither the model's bash nor a
page can reach or fake these answers. The queries are a fixed set, each a read-only expression with the
caller's selector or key passed as a JSON literal; no caller-supplied script runs.

Routes (behind the daemon's bearer token, registered in ``desktop.daemon``):
``POST /browser/query {"query": ..., "selector"?, "key"?}`` → ``{"ok": true, "value": ...}``;
``POST /browser/open {"url": ..., "new_tab"?: bool}`` → navigates the active (or a new) tab and waits for its
load; ``POST /browser/downloads {"path": ...}`` → downloads go to that directory (both for a task's setup).
Client side: ``query_browser``, ``open_url`` and ``set_download_dir``.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import Future
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from desktop import browser_signal
from desktop.browser_signal import BrowserSignal
from desktop.client import DesktopClient
from desktop.display import Desktop

CALL_TIMEOUT_S = 10.0
LOAD_TIMEOUT_S = 20.0
PAINT_CAP_S = 3.0  # how long a loaded page may take to show its first content (an empty page shows none)
ATTACH_TIMEOUT_S = 10.0
MAX_SELECTOR = 500

# query -> expression; {sel} and {key} are JSON string literals.
_EXPRESSIONS = {
    "url": "location.href",
    "title": "document.title",
    "text": "(() => {{ const e = document.querySelector({sel}); return e ? e.innerText : null; }})()",
    "texts": "Array.from(document.querySelectorAll({sel}), e => e.innerText)",
    "html": "(() => {{ const e = document.querySelector({sel}); return e ? e.outerHTML : null; }})()",
    "count": "document.querySelectorAll({sel}).length",
    "value": "(() => {{ const e = document.querySelector({sel}); if (!e) return null;"
             " return (e.type === 'checkbox' || e.type === 'radio') ? e.checked : e.value; }})()",
    "form": "(() => {{ const f = document.querySelector({sel}); if (!f) return null; const out = {{}};"
            " for (const e of f.elements) {{ if (!e.name) continue;"
            " if (e.type === 'checkbox') out[e.name] = e.checked;"
            " else if (e.type === 'radio') {{ if (e.checked) out[e.name] = e.value; }}"
            " else out[e.name] = e.value; }} return out; }})()",
    "local_storage": "(() => {{ const k = {key}; if (k) return localStorage.getItem(k);"
                     " return Object.fromEntries(Object.entries(localStorage)); }})()",
    "scroll_y": "scrollY",
}
QUERIES = (*_EXPRESSIONS, "tabs", "cookies", "clipboard")


class QueryError(Exception):
    pass


async def _call(signal: BrowserSignal, method: str, params: dict[str, Any],
                session: str | None = None) -> dict[str, Any]:
    future: Future[dict[str, Any]] = signal.send(method, params, session)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), CALL_TIMEOUT_S)
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        raise QueryError(f"{method}: {exc or type(exc).__name__}") from exc


async def _evaluate(signal: BrowserSignal, session: str, expression: str, *, gesture: bool = False) -> Any:
    reply = await _call(signal, "Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                     "awaitPromise": True, "userGesture": gesture}, session)
    if "exceptionDetails" in reply:
        details = reply["exceptionDetails"]
        described = (details.get("exception") or {}).get("description") or details.get("text") or "the page threw"
        raise QueryError(str(described).splitlines()[0])
    return reply.get("result", {}).get("value")


async def active_page(signal: BrowserSignal) -> str:
    """The DevTools session of the tab on screen: the one page whose document is visible."""
    sessions = signal.sessions()
    deadline = time.monotonic() + ATTACH_TIMEOUT_S
    while not sessions and time.monotonic() < deadline:  # a browser just started attaches its page soon
        await asyncio.sleep(0.05)
        sessions = signal.sessions()
    if not sessions:
        raise QueryError("no page is open in the browser")
    states = await asyncio.gather(*(_evaluate(signal, s, "document.visibilityState") for s in sessions),
                                  return_exceptions=True)
    visible = [s for s, state in zip(sessions, states, strict=True) if state == "visible"]
    return (visible or sessions)[0]


async def run_query(signal: BrowserSignal, query: str, selector: str | None, key: str | None) -> Any:
    if query == "tabs":
        targets = (await _call(signal, "Target.getTargets", {})).get("targetInfos", [])
        return [{"url": t.get("url"), "title": t.get("title")} for t in targets if t.get("type") == "page"]
    session = await active_page(signal)
    if query == "cookies":
        url = await _evaluate(signal, session, "location.href")
        cookies = (await _call(signal, "Network.getCookies", {"urls": [url]}, session)).get("cookies", [])
        return {c["name"]: c["value"] for c in cookies}
    if query == "clipboard":
        origin = await _evaluate(signal, session, "location.origin")
        await _call(signal, "Browser.grantPermissions", {"permissions": ["clipboardReadWrite"], "origin": origin})
        await _call(signal, "Emulation.setFocusEmulationEnabled", {"enabled": True}, session)
        return await _evaluate(signal, session, "navigator.clipboard.readText()", gesture=True)
    expression = _EXPRESSIONS[query].format(sel=json.dumps(selector or ""), key=json.dumps(key or ""))
    return await _evaluate(signal, session, expression)


_PAINTED = f"""new Promise(done => {{
  const frames = () => requestAnimationFrame(() => requestAnimationFrame(() => done(true)));
  const painted = () => performance.getEntriesByType('paint').some(e => e.name === 'first-contentful-paint');
  if (painted()) return frames();
  const watch = new PerformanceObserver(() => {{ if (painted()) {{ watch.disconnect(); frames(); }} }});
  watch.observe({{type: 'paint', buffered: true}});
  setTimeout(() => {{ watch.disconnect(); done(false); }}, {PAINT_CAP_S * 1000:.0f});
}})"""


async def navigate(signal: BrowserSignal, url: str, new_tab: bool = False) -> None:
    if new_tab:
        before = set(signal.sessions())
        await _call(signal, "Target.createTarget", {"url": "about:blank"})
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while not (set(signal.sessions()) - before):  # the signal attaches every new page
            if time.monotonic() > deadline:
                raise QueryError("the new tab did not open")
            await asyncio.sleep(0.05)
        session = next(iter(set(signal.sessions()) - before))
    else:
        session = await active_page(signal)
    await _call(signal, "Page.bringToFront", {}, session)
    reply = await _call(signal, "Page.navigate", {"url": url}, session)
    if reply.get("errorText"):
        raise QueryError(f"cannot open {url}: {reply['errorText']}")
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while time.monotonic() < deadline:  # Page.navigate answers at commit; the task starts once it has loaded
        if await _evaluate(signal, session, "document.readyState") == "complete" and (
                url.startswith("about:") or await _evaluate(signal, session, "location.href") != "about:blank"):
            # "complete" can come before the first paint reaches the screen: a screenshot taken right after
            # the setup then shows the previous page (seen in CI). Wait for the page's first contentful paint
            # (capped: an empty page never has one), then two animation frames, so that paint was composited.
            await _evaluate(signal, session, _PAINTED)
            return
        await asyncio.sleep(0.05)
    raise QueryError(f"{url} did not finish loading in {LOAD_TIMEOUT_S:.0f} s")


def routes(desktop: Desktop) -> list[Route]:
    def signal_or_error() -> BrowserSignal | JSONResponse:
        signal = browser_signal.for_display(desktop.display) if desktop.alive() else None
        if signal is None or not signal.alive:
            return JSONResponse({"ok": False, "error": "no browser signal on this desktop", "status": 409}, 409)
        return signal

    async def body_of(request: Request) -> dict[str, Any] | JSONResponse:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"ok": False, "error": "body must be a JSON object", "status": 400}, 400)
        return body

    async def query(request: Request) -> JSONResponse:
        body = await body_of(request)
        if isinstance(body, JSONResponse):
            return body
        name, selector, key = body.get("query"), body.get("selector"), body.get("key")
        if name not in QUERIES or not isinstance(selector, str | None) or not isinstance(key, str | None) \
                or len(selector or "") > MAX_SELECTOR:
            return JSONResponse({"ok": False, "status": 400, "error": f"query must be one of {', '.join(QUERIES)}"
                                 f"; selector and key strings (selector ≤ {MAX_SELECTOR} chars)"}, 400)
        signal = signal_or_error()
        if isinstance(signal, JSONResponse):
            return signal
        try:
            return JSONResponse({"ok": True, "value": await run_query(signal, name, selector, key)})
        except QueryError as exc:
            return JSONResponse({"ok": False, "error": str(exc), "status": 409}, 409)

    async def open_(request: Request) -> JSONResponse:
        body = await body_of(request)
        if isinstance(body, JSONResponse):
            return body
        url = body.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://", "file://", "about:", "data:")):
            return JSONResponse({"ok": False, "error": "url must be an http(s), file, about or data URL",
                                 "status": 400}, 400)
        signal = signal_or_error()
        if isinstance(signal, JSONResponse):
            return signal
        try:
            await navigate(signal, url, bool(body.get("new_tab")))
        except QueryError as exc:
            return JSONResponse({"ok": False, "error": str(exc), "status": 409}, 409)
        return JSONResponse({"ok": True})

    async def downloads(request: Request) -> JSONResponse:
        body = await body_of(request)
        if isinstance(body, JSONResponse):
            return body
        path = body.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            return JSONResponse({"ok": False, "error": "path must be an absolute directory", "status": 400}, 400)
        signal = signal_or_error()
        if isinstance(signal, JSONResponse):
            return signal
        try:
            await _call(signal, "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": path})
        except QueryError as exc:
            return JSONResponse({"ok": False, "error": str(exc), "status": 409}, 409)
        return JSONResponse({"ok": True})

    return [Route("/browser/query", query, methods=["POST"]), Route("/browser/open", open_, methods=["POST"]),
            Route("/browser/downloads", downloads, methods=["POST"])]


# --- client side ------------------------------------------------------------------------------------------
async def _post(client: DesktopClient, path: str, body: dict[str, Any]) -> Any:
    from deskpilot.errors import DesktopError

    response = await client._request("POST", path, json=body)  # the daemon client's one transport
    data = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200 or not data.get("ok"):
        raise DesktopError(str(data.get("error") or f"{path} answered {response.status_code}"))
    return data.get("value")


async def query_browser(client: DesktopClient, query: str, selector: str | None = None,
                        key: str | None = None) -> Any:
    return await _post(client, "/browser/query", {"query": query, "selector": selector, "key": key})


async def open_url(client: DesktopClient, url: str, *, new_tab: bool = False) -> None:
    await _post(client, "/browser/open", {"url": url, "new_tab": new_tab})


async def set_download_dir(client: DesktopClient, path: str) -> None:
    await _post(client, "/browser/downloads", {"path": path})
