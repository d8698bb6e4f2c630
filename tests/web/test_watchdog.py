"""The watchdog through the service: each detector pauses the run with its reason, and the run goes on after
resume or a hint with fresh counters; a busy but healthy run is never paused. Fake model, fake desktop."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_desktop import FakeBackend, Match
from tests.support.fake_messages import FakeMessages, Reply, reply, text, tool_use
from tests.web.conftest import Service, events, start_service, stop_service, wait_for, wait_status
from tests.web.test_control import create, post


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Any]:
    """Services with their own fake model and fake desktops, and settings ``overrides``."""
    started: list[Service] = []
    with contextlib.ExitStack() as stack:
        def make(**overrides: Any) -> Service:
            fake, desktops = stack.enter_context(FakeMessages()), FakeBackend()
            svc = start_service(tmp_path / f"data{len(started)}", desktops, anthropic_base_url=fake.url,
                                model="claude-opus-4-5", thinking_budget_tokens=0, **overrides)
            svc.extra.update(fake=fake, desktops=desktops)
            started.append(svc)
            return svc
        try:
            yield make
        finally:
            for svc in started:
                stop_service(svc)


def click(x: int, y: int) -> Reply:
    return reply(tool_use("computer", {"action": "left_click", "coordinate": [x, y]}))


def look(action: str = "screenshot") -> Reply:
    given: dict[str, Any] = {"action": action}
    if action == "zoom":
        given["region"] = [0, 0, 100, 100]
    return reply(tool_use("computer", given))


def paused_reasons(svc: Service, sid: str) -> list[str]:
    return [e["data"]["reason"] for e in events(svc, sid) if e["type"] == "status" and e["data"]["status"] == "paused"]


def watchdog_events(svc: Service, sid: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events(svc, sid) if e["type"] == "watchdog"]


def wait_paused(svc: Service, sid: str, reason: str) -> None:
    wait_for(lambda: paused_reasons(svc, sid)[-1:] == [reason])


def test_the_same_dead_click_pauses_and_resume_starts_the_count_afresh(make_service: Any) -> None:
    svc = make_service()
    fake: FakeMessages = svc.extra["fake"]
    svc.extra["desktops"].still(Match("computer", "left_click"))
    # Four clicks on one dead button, a few pixels apart; then, after resume, three more: under the limit again.
    fake.script(click(100, 100), click(103, 101), click(99, 98), click(101, 104),
                click(100, 100), click(100, 100), click(100, 100), reply(text("gave up")))
    sid = create(svc, "press the dead button")
    wait_paused(svc, sid, "stuck_repeat")
    assert len(fake.requests) == 4  # paused before asking the model again
    [trip] = watchdog_events(svc, sid)
    assert trip["reason"] == "stuck_repeat" and trip["count"] == 4 and trip["limit"] == 4
    assert "repeated the same computer left_click 4 times" in trip["message"]
    assert wait_status(svc, sid, "paused")["status"] == "paused"
    assert post(svc, f"/api/sessions/{sid}/resume").status_code == 200
    assert wait_status(svc, sid, "succeeded", "failed")["status"] == "succeeded"
    assert len(fake.requests) == 8 and len(watchdog_events(svc, sid)) == 1


def test_clicks_far_apart_or_that_change_the_screen_are_not_a_repeat(make_service: Any) -> None:
    svc = make_service()
    fake: FakeMessages = svc.extra["fake"]
    # The same click five times, each changing the screen (a counter going up), three looks in a row, the same
    # bash command twice (its output differs: a different step), and clicks 40 px apart: a healthy run.
    fake.script(*[click(200, 200)] * 5, look(), look("zoom"), look(),
                reply(tool_use("bash", {"command": "ls"})), reply(tool_use("bash", {"command": "ls -a"})),
                click(10, 10), click(50, 10), click(90, 10), reply(text("done")))
    sid = create(svc, "a busy run")
    assert wait_status(svc, sid, "succeeded", "failed", "paused")["status"] == "succeeded"
    assert watchdog_events(svc, sid) == [] and paused_reasons(svc, sid) == []


def test_no_visible_change_pauses_and_a_hint_goes_on(make_service: Any) -> None:
    svc = make_service()
    fake: FakeMessages = svc.extra["fake"]
    svc.extra["desktops"].still(Match("computer"))  # a frozen screen: nothing the agent does shows
    actions = [click(40 * i + 20, 300) for i in range(5)]
    actions += [reply(tool_use("computer", {"action": "type", "text": f"word {i}"})) for i in range(5)]
    fake.script(*actions, reply(text("ok, trying the other way")))
    sid = create(svc, "type into a frozen app")
    wait_paused(svc, sid, "no_progress")
    assert len(fake.requests) == 10
    assert watchdog_events(svc, sid)[0]["count"] == 10
    assert post(svc, f"/api/sessions/{sid}/messages", {"text": "the app is frozen: restart it"}).status_code in (
        200, 202)
    assert wait_status(svc, sid, "succeeded", "failed")["status"] == "succeeded"
    last = fake.requests[-1].body["messages"][-1]
    assert "the app is frozen: restart it" in str(last["content"])  # the hint went in with the next call


def test_rereading_the_screen_pauses_and_cancel_ends_it(make_service: Any) -> None:
    svc = make_service()
    fake: FakeMessages = svc.extra["fake"]
    fake.script(look(), look("zoom"), look(), look("zoom"), look(), look("zoom"), reply(text("never asked")))
    sid = create(svc, "just look")
    wait_paused(svc, sid, "rereading")
    assert len(fake.requests) == 6
    assert post(svc, f"/api/sessions/{sid}/cancel").status_code == 200
    assert wait_status(svc, sid, "cancelled", "failed", "succeeded")["status"] == "cancelled"
    assert len(fake.requests) == 6


def test_a_token_rate_over_the_cap_pauses(make_service: Any) -> None:
    # Each fake reply bills 1000 input + 50 output tokens: the third within a minute crosses 2500.
    svc = make_service(watchdog_max_tokens_per_minute=2500)
    fake: FakeMessages = svc.extra["fake"]
    fake.script(*[reply(tool_use("bash", {"command": f"step {i}"})) for i in range(3)], reply(text("done")))
    sid = create(svc, "burn tokens")
    wait_paused(svc, sid, "runaway_rate")
    assert len(fake.requests) == 3
    [trip] = watchdog_events(svc, sid)
    assert trip["count"] == 3150 and trip["limit"] == 2500
    assert post(svc, f"/api/sessions/{sid}/resume").status_code == 200  # the window starts afresh
    assert wait_status(svc, sid, "succeeded", "failed")["status"] == "succeeded"


def test_a_cost_rate_over_the_cap_pauses_and_a_run_under_it_does_not(make_service: Any) -> None:
    svc = make_service(watchdog_max_cost_per_minute=0.01, model_prices={"claude-opus-4-5": [5, 25, 6.25, 0.5]})
    fake: FakeMessages = svc.extra["fake"]
    # $0.005 + $0.00125 a call: the second crosses $0.01.
    fake.script(*[reply(tool_use("bash", {"command": f"step {i}"})) for i in range(2)], reply(text("done")))
    sid = create(svc, "burn money")
    wait_paused(svc, sid, "runaway_rate")
    assert len(fake.requests) == 2
    calm = make_service(watchdog_max_cost_per_minute=0.02, model_prices={"claude-opus-4-5": [5, 25, 6.25, 0.5]})
    calm.extra["fake"].script(*[reply(tool_use("bash", {"command": f"step {i}"})) for i in range(2)],
                              reply(text("done")))
    sid = create(calm, "spend a little")
    assert wait_status(calm, sid, "succeeded", "failed", "paused")["status"] == "succeeded"
