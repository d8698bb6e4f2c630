"""The daemon's browser endpoints (desktop/browser_query.py) on a real local desktop with Chromium."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from deskpilot.errors import DesktopError
from desktop.browser_query import open_url, query_browser, set_download_dir
from desktop.local import start_local_desktop
from evaluation.pages import PageServer

pytestmark = pytest.mark.desktop  # real desktops (Xvfb, Chromium) through the runner

PAGES = Path(__file__).resolve().parents[2] / "evals" / "pages"


async def test_queries_navigation_and_bad_requests(tmp_path: Path) -> None:
    with PageServer(PAGES) as pages:
        async with start_local_desktop(1024, 768, data_dir=tmp_path) as desk:
            client = desk.client
            await open_url(client, f"{pages.url}/form.html")
            assert await query_browser(client, "url") == f"{pages.url}/form.html"
            assert await query_browser(client, "title") == "Contact form"
            assert await query_browser(client, "count", "input") == 3
            assert await query_browser(client, "value", "#name") == ""
            assert await query_browser(client, "form", "#f") == {"name": "", "email": "", "topic": ""}
            assert await query_browser(client, "text", "#nothing-here") is None
            assert await query_browser(client, "local_storage") == {}
            assert await query_browser(client, "local_storage", key="contact") is None
            # A selector is data, never code: quotes and braces reach querySelector as they are.
            with pytest.raises(DesktopError, match="not a valid selector"):
                await query_browser(client, "text", "'); alert(1); ('")
            await open_url(client, f"{pages.url}/notes.html", new_tab=True)
            assert await query_browser(client, "url") == f"{pages.url}/notes.html"  # the tab on screen
            assert await client.active_tab_url() == f"{pages.url}/notes.html"  # what URL policy rules read
            assert await query_browser(client, "text", "b") == "K7-PLUM"
            tabs = await query_browser(client, "tabs")
            assert sorted(t["title"] for t in tabs) == ["Contact form", "Notes"]
            assert await query_browser(client, "cookies") == {}
            await set_download_dir(client, str(tmp_path / "dl"))

            bad = [("/browser/query", b"not json"), ("/browser/query", b'{"query": "eval"}'),
                   ("/browser/query", b'{"query": "text", "selector": 5}'),
                   ("/browser/query", b'{"query": "text", "selector": "' + b"a" * 600 + b'"}'),
                   ("/browser/open", b'{"url": "javascript:alert(1)"}'), ("/browser/open", b"[]"),
                   ("/browser/downloads", b'{"path": "relative/dir"}')]
            for path, body in bad:
                response = await client._request("POST", path, content=body)
                assert response.status_code == 400, (path, body, response.text)
                assert response.json()["ok"] is False
            assert (await client._request("GET", "/browser/query")).status_code == 405
            transport = httpx.AsyncHTTPTransport(uds=str(desk.socket_path))
            async with httpx.AsyncClient(transport=transport, base_url="http://desktop") as anonymous:
                assert (await anonymous.post("/browser/query", json={"query": "url"})).status_code == 401


# Its content (and so its first contentful paint) comes 700 ms after the document is "complete".
LATE_PAINT = """<!doctype html><html><body style="margin:0"><script>
addEventListener('load', () => setTimeout(() => {
  document.body.innerHTML = '<div style="width:100vw;height:100vh;background:#ff00aa">late</div>'; }, 700));
</script></body></html>"""


async def test_open_url_returns_once_the_page_shows_on_screen(tmp_path: Path) -> None:
    """A task's setup opens its page and the agent's first screenshot follows at once: it must show the page,
    not the one before (CI once photographed a page that was loaded but not yet painted)."""
    (tmp_path / "late.html").write_text(LATE_PAINT)
    with PageServer(tmp_path) as pages:
        async with start_local_desktop(640, 480, data_dir=tmp_path / "data") as desk:
            for _ in range(2):  # the second time, the previous page on screen is the painted one
                await open_url(desk.client, f"{pages.url}/late.html")
                got = await desk.client.frame(quality=90)
                assert got is not None
                image = Image.open(io.BytesIO(got[0])).convert("RGB")
                r, g, b = image.getpixel((image.width // 4, image.height * 3 // 4))  # clear of the pointer
                assert r > 220 and g < 40 and 140 < b < 200, (r, g, b)
                await open_url(desk.client, "about:blank")


async def test_without_a_browser_the_endpoints_say_so(tmp_path: Path) -> None:
    async with start_local_desktop(640, 480, data_dir=tmp_path, browser=False) as desk:
        with pytest.raises(DesktopError, match="no browser signal"):
            await query_browser(desk.client, "url")
        assert await desk.client.active_tab_url() is None
        with pytest.raises(DesktopError, match="no browser signal"):
            await open_url(desk.client, "http://127.0.0.1:9/")
