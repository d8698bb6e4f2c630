"""The browser UI, driven by Playwright in Debian's chromium, against the real service and desktop."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.fake_messages import FakeMessages, reply, text, tool_use
from tests.support.testpage import TestPageServer
from tests.support.ui_page import ui_page
from tests.web.conftest import Service, start_service, stop_service

pytestmark = pytest.mark.desktop  # real Chromium, and the service's real desktops

@pytest.fixture
def ui(tmp_path: Path) -> Iterator[tuple[Service, FakeMessages, TestPageServer, Page]]:
    with FakeMessages() as fake, TestPageServer() as testpage:
        svc = start_service(tmp_path / "data", anthropic_base_url=fake.url, model="claude-opus-4-5",
                            thinking_budget_tokens=0, browser_start_url=testpage.url)
        try:
            with ui_page() as page:
                yield svc, fake, testpage, page
        finally:
            stop_service(svc)


def test_login_run_approve_take_over_type_hand_back_finish(ui: tuple[Service, FakeMessages, TestPageServer, Page],
                                                           shared: Path) -> None:
    svc, fake, testpage, page = ui
    first, second = shared / "first.txt", shared / "second.txt"
    fake.script(reply(text("Step one."), tool_use("bash", {"command": f"echo one >> {first}"})),
                reply(tool_use("bash", {"command": f"echo two >> {second}"})),
                reply(text("Run finished.")))
    page.goto(svc.url + "/")
    page.fill("#login-token", "dp_wrong")
    page.click("#login-form button")
    expect(page.locator("#login-error")).to_contain_text("token")
    page.fill("#login-token", svc.tokens["alice"])
    page.click("#login-form button")
    expect(page.locator("#app")).to_be_visible()
    assert "HttpOnly" not in page.evaluate("document.cookie") and page.evaluate("document.cookie") == ""

    page.fill("#task", "write two files")
    page.select_option("#preset", "strict")
    page.click("#new-task button")
    card = page.locator(".card")
    expect(card).to_be_visible(timeout=60_000)
    expect(page.locator("#screen")).to_have_attribute("src", re.compile(r"^blob:"), timeout=30_000)  # live frames
    expect(page.locator("#timeline li.tool_call")).to_have_count(1)
    expect(card).to_contain_text("echo one")
    card.locator("button.approve").click()
    expect(page.locator("#timeline li.tool_result")).to_have_count(1, timeout=30_000)
    expect(card).to_contain_text("echo two", timeout=30_000)
    assert first.read_text() == "one\n"

    page.click("#b-takeover")
    expect(page.locator("#s-status")).to_have_text("taken_over")
    page.wait_for_selector("#vnc[data-connected='1']", timeout=30_000)
    page.locator("#vnc canvas").click(position={"x": 60, "y": 60})  # into the page's text field
    page.keyboard.type("typed through novnc")
    assert any("typed through novnc" in str(e.get("value", "")) for e in _wait_value(testpage, "typed through novnc"))

    page.fill("#handback-note", "I typed a line")
    page.click("#b-handback")
    expect(page.locator("#vnc")).to_be_hidden()
    expect(page.locator("#s-status")).to_have_text("awaiting_approval", timeout=30_000)
    page.locator(".card button.approve").click()
    expect(page.locator("#s-status")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#s-result")).to_have_text("Run finished.")
    expect(page.locator("#s-meter")).to_contain_text("3,000 in")
    assert not second.exists()  # planned before the takeover: reported to the model, not run
    assert "I typed a line" in str(fake.requests[2].body["messages"][-1])


def _wait_value(testpage: TestPageServer, needle: str) -> list[dict[str, object]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        events = [e for e in testpage.events() if e["type"] == "input"]
        if any(needle in str(e.get("value", "")) for e in events):
            return events
        time.sleep(0.1)
    return [e for e in testpage.events() if e["type"] == "input"]
