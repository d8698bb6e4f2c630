"""The browser UI with another provider's session (Playwright in Debian's chromium, the fake desktop backend):
a vendor safety check shows its code and message on the approval card, and a model's question is shown so
the user answers it with a message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support import fake_openai as fo
from tests.support.fake_desktop import FakeBackend
from tests.support.ui_page import ui_page
from tests.web.conftest import Service, start_service, stop_service


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[tuple[Service, fo.FakeOpenAI, FakeBackend, Page]]:
    desktops = FakeBackend()
    with fo.FakeOpenAI() as fake:
        svc = start_service(tmp_path / "data", desktops, anthropic_api_key=None, openai_api_key="sk-o",
                            openai_base_url=fake.url + "/v1")
        try:
            with ui_page() as page:
                yield svc, fake, desktops, page
        finally:
            stop_service(svc)


def test_safety_check_card_and_a_question_answered_by_message(
        ui: tuple[Service, fo.FakeOpenAI, FakeBackend, Page]) -> None:
    svc, fake, desktops, page = ui
    flagged = fo.check("sensitive_domain", "This is a banking site.")
    fake.script(fo.respond(fo.computer_call(fo.click(100, 120), checks=[flagged])),
                fo.respond(fo.message("Should I submit the transfer form?")),
                fo.respond(fo.message("Left it unsubmitted.")))
    page.goto(svc.url + "/")
    page.fill("#login-token", svc.tokens["alice"])
    page.click("#login-form button")
    expect(page.locator("#app")).to_be_visible()

    page.fill("#task", "check the balance")
    page.fill("#model", "openai/computer-use-preview")
    page.click("#new-task button")
    card = page.locator("#approval .card")
    expect(card).to_be_visible(timeout=60_000)
    expect(card.locator(".safety li[data-code='sensitive_domain']")).to_contain_text("This is a banking site.")
    expect(card.locator("#always-allow")).to_have_count(0)  # each flagged action needs its own decision
    assert desktops.desktops[0].clicks == []
    card.locator("button.approve").click()

    question = page.locator("#question .card")
    expect(question).to_contain_text("Should I submit the transfer form?", timeout=30_000)
    assert desktops.desktops[0].clicks == [(100, 120)]
    expect(page.locator("#message")).to_have_attribute("placeholder", "Your answer to the agent")
    page.fill("#message", "no, leave it")
    page.click("#message-form button")
    expect(page.locator("#s-status")).to_have_text("succeeded", timeout=30_000)
    expect(question).to_have_count(0)
    assert "no, leave it" in str(fake.requests[-1].body["input"])
