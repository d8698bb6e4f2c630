"""Faults from the fake Messages API reach the real SDK; our retry layer decides. No tool runs twice."""

from __future__ import annotations

import asyncio
import time

import anthropic
import pytest

from agent.providers.anthropic import AnthropicClient
from agent.retry import RetryConfig, Verdict, delay_for, parse_retry_after
from tests.agent.conftest import LoopFactory, RecordingDesktop
from tests.support.fake_messages import FakeMessages, error, reply, text, tool_use

CLICK = {"action": "left_click", "coordinate": [10, 20]}


def click_then_done(fake: FakeMessages) -> None:
    fake.script(reply(tool_use("computer", CLICK, id="toolu_click")))


async def test_429_honours_retry_after_and_reports_when(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    fake_messages.script(reply(tool_use("computer", CLICK, id="toolu_click")),
                         error(429, headers={"retry-after": "1"}), reply(text("done")))
    desktop = RecordingDesktop()
    loop, events = make_loop(desktop)

    result = await loop.run("click")

    assert result.status == "succeeded"
    retry = events.of("retrying")
    assert len(retry) == 1
    assert (retry[0]["status_code"], retry[0]["delay_s"], retry[0]["attempt"]) == (429, 1.0, 2)
    r = fake_messages.requests
    assert r[2].at - r[1].at >= 1.0  # waited as told
    assert abs(retry[0]["retry_at"] - r[2].at) < 1.0  # the event said when the retry would come
    assert len(desktop.calls) == 1


async def test_retry_after_is_capped_by_the_setting(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    fake_messages.script(error(429, headers={"retry-after": "3600"}), reply(text("done")))
    loop, events = make_loop(retry=RetryConfig(max_retries=2, backoff_s=0.01, retry_after_cap_s=0.2))
    assert (await loop.run("hi")).status == "succeeded"
    assert events.of("retrying")[0]["delay_s"] == 0.2


async def test_three_529s_then_success(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    click_then_done(fake_messages)
    fake_messages.script(error(529), error(529), error(529), reply(text("done")))
    desktop = RecordingDesktop()
    loop, events = make_loop(desktop)

    result = await loop.run("click")

    assert result.status == "succeeded"
    assert [e["status_code"] for e in events.of("retrying")] == [529, 529, 529]
    assert [e["attempt"] for e in events.of("retrying")] == [2, 3, 4]
    assert len(desktop.calls) == 1
    # the retried request is the same request: the tool result was added once
    bodies = [r.body["messages"] for r in fake_messages.requests[1:]]
    assert all(b == bodies[0] for b in bodies)


async def test_overloaded_error_inside_a_streamed_200_is_retried(
    fake_messages: FakeMessages, make_loop: LoopFactory
) -> None:
    fake_messages.script(reply(tool_use("computer", CLICK, id="toolu_a"), overload_mid_stream=True),
                         reply(tool_use("computer", CLICK, id="toolu_a")), reply(text("done")))
    desktop = RecordingDesktop()
    loop, events = make_loop(desktop)

    result = await loop.run("click")

    assert result.status == "succeeded"
    assert events.of("retrying")[0]["reason"] == "overloaded_error during the stream"
    assert len(desktop.calls) == 1  # the half-streamed tool_use never ran
    assert [e["id"] for e in events.of("tool_call")] == ["toolu_a"]


async def test_a_cut_off_stream_is_retried(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    fake_messages.script(reply(tool_use("computer", CLICK), cut_off=True), reply(text("done")))
    desktop = RecordingDesktop()
    loop, events = make_loop(desktop)
    assert (await loop.run("click")).status == "succeeded"
    assert desktop.calls == []
    assert events.of("retrying")[0]["reason"] == "the response stream was cut off"


async def test_timeout_is_retried(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    click_then_done(fake_messages)
    fake_messages.script(reply(text("too late"), delay_s=3), reply(text("done")))
    desktop = RecordingDesktop()
    loop, events = make_loop(desktop)
    assert isinstance(loop.client, AnthropicClient)
    loop.client = AnthropicClient(loop.client.sdk.with_options(timeout=0.5))

    result = await loop.run("click")

    assert (result.status, result.text) == ("succeeded", "done")
    assert events.of("retrying")[0]["reason"] == "timeout"
    assert len(desktop.calls) == 1


async def test_401_fails_at_once_with_a_plain_message(make_loop: LoopFactory) -> None:
    with FakeMessages(api_key="the-right-key") as fake:
        client = anthropic.AsyncAnthropic(api_key="wrong", base_url=fake.url, max_retries=0)
        loop, events = make_loop()
        loop.client = AnthropicClient(client)
        result = await loop.run("hi")
        await client.close()
        fake.script(reply(text("hello")))  # the right key gets through
        right = anthropic.AsyncAnthropic(api_key="the-right-key", base_url=fake.url, max_retries=0)
        ok_loop, _ = make_loop()
        ok_loop.client = AnthropicClient(right)
        assert (await ok_loop.run("hi")).text == "hello"
        await right.close()
    assert result.status == "failed"
    assert result.reason == "auth"
    assert result.message.startswith("the API key was rejected (401)")
    assert len(fake.requests) == 2  # one refused, no retry; one accepted
    assert events.of("retrying") == []
    assert events.of("error")[0]["message"] == result.message


async def test_400_fails_with_the_api_message(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    fake_messages.script(error(400, message="messages: roles must alternate"))
    loop, _ = make_loop()
    result = await loop.run("hi")
    assert (result.status, result.message) == (
        "failed", "the request was rejected as invalid (400): messages: roles must alternate")


async def test_retries_exhausted_pause_the_run_and_resume_continues(
    fake_messages: FakeMessages, make_loop: LoopFactory
) -> None:
    click_then_done(fake_messages)
    fake_messages.script(*[error(500)] * 5, reply(text("done")))  # 1 try + 4 retries, all fail
    desktop = RecordingDesktop()
    loop, events = make_loop(desktop)

    task = asyncio.create_task(loop.run("click"))
    deadline = time.monotonic() + 10
    while loop.status != "paused" and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert (loop.status, events.statuses()[-1]) == ("paused", ("paused", "model_unavailable"))
    assert not task.done()
    assert len(fake_messages.requests) == 6
    loop.resume()
    result = await asyncio.wait_for(task, 10)

    assert result.status == "succeeded"
    assert len(desktop.calls) == 1
    assert ("running", "") in events.statuses()[events.statuses().index(("paused", "model_unavailable")):]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"retry-after": "2"}, 2.0), ({"retry-after-ms": "1500"}, 1.5), ({"retry-after": "soon"}, None), ({}, None)],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date() -> None:
    import email.utils

    value = email.utils.formatdate(time.time() + 30, usegmt=True)
    got = parse_retry_after({"retry-after": value})
    assert got is not None and 28 <= got <= 30


def test_backoff_doubles_with_jitter_and_honours_retry_after_up_to_the_cap() -> None:
    cfg = RetryConfig(backoff_s=1.0, max_backoff_s=8.0, retry_after_cap_s=30.0)
    plain = Verdict(True, "overloaded (529)", 529)
    for index, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 8.0)]:
        delays = {delay_for(plain, index, cfg) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered, so clients that failed together do not retry together
    assert delay_for(Verdict(True, "rate limited (429)", 429, 12.0), 0, cfg) == 12.0
    assert delay_for(Verdict(True, "rate limited (429)", 429, 3600.0), 0, cfg) == 30.0
