"""The watchdog on its own: fed events as the loop emits them, with a fake clock."""

from __future__ import annotations

from typing import Any

from agent import events
from agent.cli_run import Terminal
from agent.events import Event
from agent.watchdog import Watchdog, WatchdogConfig
from tests.agent.conftest import LoopFactory, RecordingDesktop
from tests.support.fake_messages import FakeMessages, reply, text, tool_use


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def act(dog: Watchdog, tool: str, given: dict[str, Any], *, changed: bool | None = None, output: str = "",
        error: str = "", screen: bytes | None = None) -> None:
    use_id = f"t{id(given)}-{len(dog._calls)}"
    dog.observe(Event("tool_call", {"id": use_id, "tool": tool, "input": given, "step": 1}))
    meta = {} if changed is None else {"changed": changed}
    dog.observe(events.tool_result(use_id, tool, output=output, error=error, step=1, meta=meta, image=screen))


def usage(dog: Watchdog, tokens: int, cost: float = 0.0) -> None:
    dog.observe(Event("usage", {"input_tokens": tokens, "output_tokens": 0, "cache_write_tokens": 0,
                                "cache_read_tokens": 10**6, "cost_usd": cost}))


def test_repeat_within_the_radius_trips_outside_it_does_not() -> None:
    dog = Watchdog(WatchdogConfig(repeat_limit=3, radius_px=8, no_change_limit=0))
    for x in (100, 106, 94):  # 6 px either side of the first
        act(dog, "computer", {"action": "left_click", "coordinate": [x, 50]}, changed=False)
    trip = dog.take()
    assert trip is not None and trip.reason == "stuck_repeat"
    assert (dog.repeats, dog.unchanged) == (0, 0)  # taken: counters restart
    for x in (100, 110, 120):  # 10 px apart: different targets
        act(dog, "computer", {"action": "left_click", "coordinate": [x, 50]}, changed=False)
    assert dog.take() is None


def test_a_repeat_that_cycles_through_screens_already_seen_trips() -> None:
    """Clicking the same spot of a page selects a word, then the paragraph, then nothing (eval suite, nav-kettle):
    every screen differs from the one before it, and still nothing is getting done."""
    dog = Watchdog(WatchdogConfig(repeat_limit=4, no_change_limit=0))
    click = {"action": "left_click", "coordinate": [500, 700]}
    for k in range(5):
        act(dog, "computer", click, changed=True, screen=b"ABC"[k % 3:k % 3 + 1])
        assert dog.take() is None, k  # A B C, then A and B come back: 3 repeats so far
    act(dog, "computer", click, changed=True, screen=b"C")
    trip = dog.take()
    assert trip is not None and trip.reason == "stuck_repeat" and trip.count == 4
    # The same click moving through new screens (paging down a long list) is progress, however long.
    for k in range(20):
        act(dog, "computer", click, changed=True, screen=f"page {k}".encode())
    assert dog.take() is None
    # So is coming back to a screen with a different action in between (two tabs in turn).
    for k in range(10):
        act(dog, "computer", {"action": "key", "text": "ctrl+Tab"} if k % 2 else click, changed=True,
            screen=b"AB"[k % 2:k % 2 + 1])
    assert dog.take() is None


def test_a_different_text_or_key_is_a_different_action() -> None:
    dog = Watchdog(WatchdogConfig(repeat_limit=2, no_change_limit=0))
    act(dog, "computer", {"action": "type", "text": "a"}, changed=False)
    act(dog, "computer", {"action": "type", "text": "b"}, changed=False)
    act(dog, "computer", {"action": "key", "text": "Return"}, changed=False)
    assert dog.take() is None
    act(dog, "computer", {"action": "key", "text": "Return"}, changed=False)
    assert dog.take() is not None


def test_bash_repeats_only_with_the_same_output() -> None:
    dog = Watchdog(WatchdogConfig(repeat_limit=3, no_change_limit=0))
    for n in range(3):
        act(dog, "bash", {"command": "ls"}, output=f"file{n}")  # something new each time: progress
    assert dog.take() is None
    for _ in range(3):
        act(dog, "bash", {"command": "curl x"}, error="connection refused")
    trip = dog.take()
    assert trip is not None and trip.reason == "stuck_repeat"


def test_a_look_between_dead_actions_neither_resets_nor_counts_for_no_progress() -> None:
    dog = Watchdog(WatchdogConfig(no_change_limit=3, repeat_limit=0, reread_limit=0))
    act(dog, "computer", {"action": "left_click", "coordinate": [1, 1]}, changed=False)
    act(dog, "computer", {"action": "screenshot"})
    act(dog, "computer", {"action": "left_click", "coordinate": [90, 90]}, changed=False)
    assert dog.take() is None
    act(dog, "computer", {"action": "scroll", "coordinate": [300, 300]}, changed=False)
    trip = dog.take()
    assert trip is not None and (trip.reason, trip.count) == ("no_progress", 3)


def test_an_unanswered_call_says_nothing_about_progress() -> None:
    dog = Watchdog(WatchdogConfig(no_change_limit=1))
    dog.observe(Event("tool_call", {"id": "x", "tool": "computer", "input": {"action": "left_click"}, "step": 1}))
    dog.observe(events.unanswered_result("x", "computer", "interrupted", "not_run", 1))
    assert dog.take() is None


def test_the_rate_window_forgets_what_is_older_than_a_minute() -> None:
    clock = Clock()
    dog = Watchdog(WatchdogConfig(max_tokens_per_minute=1000, max_cost_per_minute=0), clock)
    usage(dog, 600)  # cache reads are not counted: they are a tenth of the price
    clock.now += 61
    usage(dog, 600)
    assert dog.take() is None
    clock.now += 30
    usage(dog, 600)
    trip = dog.take()
    assert trip is not None and (trip.reason, trip.count) == ("runaway_rate", 1200)


def test_zero_turns_every_detector_off() -> None:
    dog = Watchdog(WatchdogConfig(0, 8, 0, 0, 0, 0.0))
    for _ in range(50):
        act(dog, "computer", {"action": "left_click", "coordinate": [5, 5]}, changed=False)
        act(dog, "computer", {"action": "screenshot"})
        usage(dog, 10**7, 100.0)
    assert dog.take() is None


async def test_the_terminal_stops_a_stuck_run_when_no_one_can_answer(
    fake_messages: FakeMessages, make_loop: LoopFactory
) -> None:
    """``deskpilot run`` without a terminal: a watchdog pause ends the run, with the reason kept for the exit."""
    same = {"action": "key", "text": "F5"}
    fake_messages.script(*[reply(tool_use("computer", same)) for _ in range(3)], reply(text("never asked")))
    term = Terminal(interactive=False, auto_approve=False)
    loop, _ = make_loop(RecordingDesktop(), watchdog=WatchdogConfig(repeat_limit=3))
    loop._emit = term  # the terminal prints and answers, as in agent.cli_run
    term.loop = loop
    result = await loop.run("reload until it works")
    assert (result.status, len(fake_messages.requests)) == ("cancelled", 3)
    assert term.stuck == "the agent repeated the same computer key 3 times and nothing changed"
