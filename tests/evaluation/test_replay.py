"""The replay view in Debian's chromium (Playwright): a finished run with approvals, after a service restart."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.support.fake_messages import FakeMessages, reply, text, thinking, tool_use
from tests.support.ui_page import ui_page
from tests.web.conftest import start_service, stop_service, wait_for, wait_status

pytestmark = pytest.mark.desktop  # real desktops (Xvfb, Chromium) through the runner


def test_a_finished_run_replays_after_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with FakeMessages() as fake:
        fake.script(
            reply(thinking("Where am I?"), text("Looking first."), tool_use("computer", {"action": "screenshot"})),
            reply(text("Clicking the middle."),
                  tool_use("computer", {"action": "left_click", "coordinate": [400, 300]})),
            reply(tool_use("bash", {"command": "echo replayed"})),
            reply(text("All done.")),
        )
        svc = start_service(data, anthropic_base_url=fake.url, model="claude-opus-4-5", thinking_budget_tokens=0)
        try:
            with svc.client("alice") as c:
                sid = c.post("/api/sessions", json={"task": "replay me", "policy": {"preset": "strict"}}).json()["id"]
                for _ in range(2):  # the click and the command are asked about; a person approves both
                    pending = wait_for(lambda: c.get(f"/api/sessions/{sid}").json()["pending_approval"])
                    assert c.post(f"/api/sessions/{sid}/approvals/{pending['id']}",
                                  json={"decision": "approve", "note": "fine"}).status_code == 200
            assert wait_status(svc, sid, "succeeded", "failed")["status"] == "succeeded"
            # The desktop is stopped after the final status: let it go before the service does.
            wait_for(lambda: not any((data / "desktops").glob("d-*")), 60)
        finally:
            stop_service(svc)
    svc = start_service(data)  # a fresh process view of the same store: nothing is live any more
    try:
        with ui_page() as page:
            assert page.context.request.post(svc.url + "/api/login",
                                             data={"token": svc.tokens["alice"]}).ok
            page.goto(f"{svc.url}/#{sid}")
            expect(page.locator("#s-replay")).to_have_attribute("href", f"/static/replay.html?session={sid}")
            page.goto(f"{svc.url}/static/replay.html?session={sid}")
            steps = page.locator("#r-steps li")
            expect(steps).to_have_count(4)
            expect(page.locator("#r-status")).to_have_text("succeeded")
            expect(page.locator("#r-task")).to_have_text("replay me")
            expect(page.locator("#r-totals")).to_contain_text("4 model calls · 3 actions · 4,000 in")
            expect(page.locator("#r-pos")).to_have_text("step 1 of 4")
            expect(page.locator("#r-step")).to_contain_text("Looking first.")
            expect(page.locator("#r-step details")).to_contain_text("Where am I?")
            # approvals on the timeline, each a way to its step
            marks = page.locator("#r-marks li")
            expect(marks).to_have_count(4)
            expect(marks.nth(1)).to_have_text("user approve")
            marks.nth(0).click()
            expect(page.locator("#r-pos")).to_have_text("step 2 of 4")
            step = page.locator("#r-step")
            expect(step).to_contain_text('"action":"left_click"')
            expect(step).to_contain_text("user approve: fine")
            expect(step).to_contain_text("settle")
            expect(page.locator("#r-shot")).to_have_attribute("src", re.compile(r"/screenshots/[0-9a-f]{64}\.png$"))
            # the click is drawn on the screen it was chosen on: red marker pixels where it points
            wait_for(lambda: page.evaluate("document.getElementById('r-overlay').width") > 0, 20)
            red = page.evaluate("""(() => { const c = document.getElementById('r-overlay');
                const d = c.getContext('2d').getImageData(380, 280, 40, 40).data; let n = 0;
                for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 1] < 90 && d[i + 3] > 0) n++;
                return n; })()""")
            assert red > 20
            page.keyboard.press("ArrowRight")
            expect(page.locator("#r-pos")).to_have_text("step 3 of 4")
            expect(step).to_contain_text("replayed")
            page.locator("#r-scrubber").fill("4")
            expect(step).to_contain_text("answer: All done.")
            href = page.locator("#r-download").get_attribute("href")
            assert href == f"/api/sessions/{sid}/trajectory"
            got = page.context.request.get(svc.url + href)
            assert got.ok and zipfile.ZipFile(io.BytesIO(got.body())).namelist()
            # someone else's session: a plain message, no crash
            page.goto(f"{svc.url}/static/replay.html?session=nope")
            expect(page.locator("#r-error")).to_contain_text("not found")
    finally:
        stop_service(svc)
