"""Window-title rules in a real run: the real SDK against the fake Messages API, a real desktop daemon and Chromium.

The page polls a loopback server for its ``document.title``, so the test can change the active window's title
between runs; the policy must read the title at check time, through the loop's own desktop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anthropic
import pytest

from agent.approvals import Decision
from agent.events import Event
from agent.loop import AgentLoop
from agent.policy import ApprovalPolicy, Rule
from deskpilot.settings import Settings
from desktop.client import DesktopClient
from desktop.local import start_local_desktop
from tests.agent.conftest import Collector, make_config
from tests.support.fake_messages import FakeMessages, reply, text, tool_use

PAGE = b"""<!doctype html><meta charset="utf-8"><title>loading</title><h1>title follows the server</h1>
<script>
setInterval(async () => {
  const r = await fetch('/title', {cache: 'no-store'});
  const t = await r.text();
  if (document.title !== t) document.title = t;
}, 100);
</script>"""


class TitleServer:
    """Serves the page and the title it should show (``.title``), on 127.0.0.1."""

    def __init__(self, title: str) -> None:
        self.title = title
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = server.title.encode() if self.path == "/title" else PAGE
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8" if self.path == "/title"
                                 else "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def titles() -> Iterator[TitleServer]:
    server = TitleServer("Ünïcødé BANK — Überweisung ✓")
    yield server
    server.close()


class Approver(Collector):
    """Records events and approves every ask at once (the decision lands before the loop waits on it)."""

    loop: AgentLoop | None = None

    async def __call__(self, event: Event) -> None:
        await super().__call__(event)
        if event.type == "approval_requested" and self.loop is not None:
            self.loop.decide(event.data["approval_id"], Decision.approve())


async def wait_title(client: DesktopClient, part: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while (title := await client.active_window_title()) is None or part not in title:
        assert loop.time() < deadline, f"title never contained {part!r}, last: {title!r}"
        await asyncio.sleep(0.05)


async def run_once(fake: FakeMessages, client: DesktopClient, policy: ApprovalPolicy) -> Approver:
    fake.script(reply(tool_use("computer", {"action": "screenshot"})), reply(text("done")))
    model = anthropic.AsyncAnthropic(api_key="k", base_url=fake.url, max_retries=0)
    events = Approver()
    loop = AgentLoop(client=model, desktop=client, policy=policy, emit=events, config=make_config())
    events.loop = loop
    try:
        result = await loop.run("take a screenshot")
    finally:
        await model.close()
    assert (result.status, result.text) == ("succeeded", "done")
    assert [d["is_error"] for d in events.of("tool_result")] == [False]
    return events


@pytest.mark.desktop
async def test_a_window_title_rule_asks_only_while_the_title_matches(fake_messages: FakeMessages,
                                                                     titles: TitleServer, tmp_path: Path) -> None:
    rule = Rule("ask", window=r"(?i)\bbank\b", reason="the active window looks like a bank")
    policy = ApprovalPolicy("autonomous", [rule])  # no provider given: the loop takes it from the desktop
    async with start_local_desktop(800, 600, start_url=titles.url, kiosk=True, data_dir=tmp_path,
                                   settings=Settings()) as desk:
        await wait_title(desk.client, "Ünïcødé BANK — Überweisung ✓")
        asked = await run_once(fake_messages, desk.client, policy)
        assert policy.window_title is not None
        assert [d["reason"] for d in asked.of("approval_requested")] == ["the active window looks like a bank"]
        assert [(d["by"], d["decision"]) for d in asked.of("approval_decided")] == [("user", "approve")]

        titles.title = "Wetter — Überblick ☀"
        await wait_title(desk.client, "Wetter — Überblick ☀")
        quiet = await run_once(fake_messages, desk.client, policy)
        assert quiet.of("approval_requested") == []
        assert [(d["by"], d["decision"], d["reason"]) for d in quiet.of("approval_decided")] == [
            ("policy", "allow", "autonomous")]
