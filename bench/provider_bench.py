"""Provider adapters: overhead per step with an instant fake model, and the saving from batched actions.

Every provider's fake API (``tests/support/fake_*``) answers instantly over HTTP through the real SDK; the
desktop is instant and in process (``bench.agent_bench.InstantDesktop``: a fixed 1024x768 screenshot, no
settle). So a step's wall time is the controller's own cost: loop + adapter (history -> request, reply ->
canonical calls) + SDK + loopback HTTP. ``adapter ms`` times the adapter's own translation alone (request
building from the run's final history, median of repeats). Image tokens per request are estimated with each
vendor's published rule for a 1024x768 screenshot (Anthropic w*h/750; OpenAI 85 + 170 per 512-px tile;
Gemini 258 per 768-px tile; Qwen-VL one token per 28x28 patch of the smart_resized image).

The batching row runs the same 30 clicks on the Anthropic path once as one tool_use per reply and once as
three parallel tool_use blocks per reply: model calls, screenshots sent to the model, and wall time.

Run: ``.venv/bin/python -m bench.provider_bench [--steps 40]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64 as b64
import statistics
import sys
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anthropic

from agent import history as hist
from agent.config import LoopConfig
from agent.events import discard
from agent.loop import AgentLoop
from agent.models import toolset_for
from agent.policy import ApprovalPolicy
from agent.prompts import DesktopFacts, system_prompt
from agent.providers.anthropic import AnthropicClient
from agent.providers.client import ModelClient
from agent.providers.compat import CompatClient
from agent.providers.gemini import GeminiClient, build_contents
from agent.providers.openai_responses import OpenAIResponsesClient, build_input
from agent.watchdog import WatchdogConfig
from bench.agent_bench import SHOTS, InstantDesktop, screenshot
from tests.support import fake_compat as fc
from tests.support import fake_gemini as fg
from tests.support import fake_openai as fo
from tests.support.fake_messages import FakeMessages, reply, text, tool_use
from tests.support.scripted_http import Request

IMAGE_TOKENS = {"anthropic": 1024 * 768 // 750, "openai": 85 + 170 * 4, "gemini": 258 * 2, "compat": 37 * 27}


def _steps(request_body: dict[str, Any], key: str, role: str) -> int:
    return sum(1 for m in request_body.get(key, []) if m.get("role") == role)


def anthropic_turn(steps: int, per_reply: int = 1) -> Callable[[Any], Any]:
    def answer(request: Any) -> Any:
        done = _steps(request.body, "messages", "assistant")
        if done * per_reply >= steps:
            return reply(text("done"))
        return reply(*[tool_use("computer", {"action": "left_click", "coordinate": [500, 350]})
                       for _ in range(per_reply)])
    return answer


def openai_turn(steps: int) -> Callable[[Request], Any]:
    def answer(request: Request) -> Any:
        done = sum(1 for i in request.body["input"] if i.get("type") == "computer_call")
        return fo.respond(fo.message("done")) if done >= steps else fo.respond(
            fo.reasoning("click it"), fo.computer_call(fo.click(500, 350)))
    return answer


def gemini_turn(steps: int) -> Callable[[Request], Any]:
    def answer(request: Request) -> Any:
        done = _steps(request.body, "contents", "model")
        return fg.candidate(fg.text("done")) if done >= steps else fg.candidate(fg.call("click_at", x=500, y=500))
    return answer


def compat_turn(steps: int) -> Callable[[Request], Any]:
    def answer(request: Request) -> Any:
        done = _steps(request.body, "messages", "assistant")
        if done >= steps:
            return fc.say("Thought: done\nAction: finished(content='done')")
        return fc.say("Thought: click it\nAction: click(start_box='<|box_start|>(518,378)<|box_end|>')")
    return answer


def config_for(model: str) -> LoopConfig:
    return LoopConfig(model=model, tools=toolset_for(model.rsplit("/", 1)[-1]), width=1024, height=768,
                      system=system_prompt(DesktopFacts()), max_tokens=4096, thinking_budget=0, max_steps=10_000,
                      max_cost_usd=0,
                      # The instant desktop never changes: the watchdog would pause the run as "no progress".
                      watchdog=WatchdogConfig(0, 0, 0, 0, 0, 0))


async def run(client: ModelClient, model: str) -> tuple[list[float], float, list[dict[str, Any]]]:
    desktop = InstantDesktop()
    loop = AgentLoop(client=client, desktop=desktop, policy=ApprovalPolicy("autonomous"), emit=discard,
                     config=config_for(model))
    started = time.perf_counter()
    await loop.run("click it")
    return desktop.times, time.perf_counter() - started, loop.history


def adapter_ms(provider: str, client: ModelClient, history: list[dict[str, Any]], config: LoopConfig) -> float:
    build: Callable[[], object] = {
        "anthropic": lambda: config.request_params(hist.with_cache_breakpoints(history)),
        "openai": lambda: build_input(history),
        "gemini": lambda: build_contents(history, client._turns),  # type: ignore[attr-defined]
        "compat": lambda: client.messages(history, config),  # type: ignore[attr-defined]
    }[provider]
    build()  # warm (the compat adapter caches resized screenshots, as it does during a run)
    times = []
    for _ in range(20):
        started = time.perf_counter()
        build()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def make_client(provider: str, url: str) -> ModelClient:
    if provider == "anthropic":
        return AnthropicClient(anthropic.AsyncAnthropic(api_key="k", base_url=url, max_retries=0))
    if provider == "openai":
        return OpenAIResponsesClient.create("k", url + "/v1", 30)
    if provider == "gemini":
        return GeminiClient.create("k", url, 30)
    return CompatClient.create("k", url + "/v1", 30)


async def provider_rows(steps: int) -> None:
    print(f"{steps} steps per provider, instant fake model over HTTP, instant desktop, keep 5 / remove 3\n")
    print(f"{'provider':<10} {'step p50':>9} {'step p95':>9} {'adapter':>8} {'requests':>9} "
          f"{'images/req':>11} {'image tok/req':>14} {'wall':>7}")
    cases = [("anthropic", "claude-opus-4-5", FakeMessages, anthropic_turn(steps)),
             ("openai", "openai/computer-use-preview", fo.FakeOpenAI, openai_turn(steps)),
             ("gemini", "gemini/gemini-2.5-computer-use-preview-10-2025", fg.FakeGemini, gemini_turn(steps)),
             ("compat", "openai-compatible/ui-tars-1.5-7b", fc.FakeCompat, compat_turn(steps))]
    for provider, model, fake_class, turn in cases:
        with fake_class() as fake:
            fake.script(*[turn] * (steps + 2))
            client = make_client(provider, fake.url)
            times, wall, history = await run(client, model)
            overhead = adapter_ms(provider, client, history, config_for(model))
            await client.close()
            per_step = [(b - a) * 1000 for a, b in pairwise(times)][6:]  # steady state (after the first removal)
            # real screenshots only: an OpenAI output whose call has no screenshot carries a 1x1 placeholder
            images = [sum(1 for i in r.images if len(i) > 1000) for r in fake.requests]
            p50, p95 = statistics.median(per_step), statistics.quantiles(per_step, n=20)[18]
            print(f"{provider:<10} {p50:>7.1f}ms {p95:>7.1f}ms "
                  f"{overhead:>6.2f}ms {len(fake.requests):>9} {statistics.mean(images):>11.1f} "
                  f"{statistics.mean(images) * IMAGE_TOKENS[provider]:>14.0f} {wall:>6.2f}s")


def resize_ms() -> float:
    """What the compat adapter adds for each new screenshot: decode, resize for the family, encode."""
    client = CompatClient.create("k", "http://127.0.0.1:9/v1", 1)
    times = []
    for shot in SHOTS[:10]:
        data = b64.b64encode(shot).decode()
        started = time.perf_counter()
        client._image_url(data, (1036, 756))
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def batching_row(actions: int) -> None:
    print(f"\nbatching: {actions} clicks on the Anthropic path, one per reply vs three parallel tool_use per reply")
    for per_reply in (1, 3):
        with FakeMessages() as fake:
            fake.script(*[anthropic_turn(actions, per_reply)] * (actions + 2))
            client = AnthropicClient(anthropic.AsyncAnthropic(api_key="k", base_url=fake.url, max_retries=0))
            _times, wall, history = await run(client, "claude-opus-4-5")
            await client.close()
            shots = sum(1 for m in history if m["role"] == "user" for b in m["content"] if b.get("type") ==
                        "tool_result" for c in b["content"] if c.get("type") == "image" or c.get("text") ==
                        hist.PLACEHOLDER)
            print(f"  {per_reply} per reply: {len(fake.requests):>3} model calls, {shots:>3} screenshots sent back, "
                  f"wall {wall:.2f}s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    SHOTS.extend(screenshot(i) for i in range(20))
    await provider_rows(args.steps)
    print(f"compat: each new screenshot resized for the family (decode, resize, PNG): {resize_ms():.1f} ms median "
          "(inside its step time above)")
    await batching_row(30)


if __name__ == "__main__":
    asyncio.run(main())
