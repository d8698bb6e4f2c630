"""Agent loop benchmark: controller overhead per step, bytes per request, cache-friendly prefix share.

Both approaches talk to the same instantly-answering fake Messages API (``tests/support/fake_messages``)
over HTTP and to the same instant in-process desktop (a fixed-cost screenshot, no settle), so the
numbers are the controller's own cost:

- ours: ``agent.loop.AgentLoop`` — one AsyncAnthropic, streaming, keep 5 / remove 3 screenshots,
  cache breakpoints on the system prompt and the two newest user turns;
- reference: the computer-use demo's approach — a new synchronous ``Anthropic`` client per step,
  non-streaming, every screenshot kept (its truncation is off for the Anthropic provider), cache
  breakpoints on the three newest user turns.

"Prefix share" compares the prompt in cache order (tools, system, messages; ``cache_control`` markers
left out, as the API matches cached prefixes on content): ``of_prev`` = the share of the previous
request this one repeats verbatim (what the cache can serve), ``of_cur`` = that prefix over this request.
Bytes overweight screenshots (a 1024x768 PNG is ~60 kB of base64 but ~1,050 tokens), so the share is
also given in estimated tokens — what the prompt cache actually reads and bills: an image costs
width*height/750 tokens (Anthropic's documented estimate), each tool definition what the computer-use docs
give for it (computer 735 + 466 for the system prompt it adds, bash 245, editor 700), text about one token
per 4 characters. The share grows with the run (the history's text is a larger part of each request), so it
is also printed per window of 25 requests. ``--thinking-words N`` makes the fake model return a thinking
block of N words per step, as the real API does when thinking is on (our default; the reference enables it
too); its signature is not counted.

Run: ``.venv/bin/python bench/agent_bench.py [--steps 30] [--keep 5 --chunk 3] [--thinking-words 0]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

import anthropic
from PIL import Image, ImageDraw

from agent.config import LoopConfig
from agent.events import discard
from agent.loop import AgentLoop
from agent.models import toolset_for
from agent.policy import ApprovalPolicy
from agent.prompts import DesktopFacts, system_prompt
from desktop.tools.base import ToolResult
from tests.support.fake_messages import FakeMessages, Request, reply, text, thinking, tool_use
from tests.support.fake_messages import without_cache_control as strip

MODEL = "claude-opus-4-5"


def screenshot(step: int) -> bytes:
    """A 1024x768 PNG that looks like a page (~tens of kB) and differs a little per step."""
    image = Image.new("RGB", (1024, 768), (244, 244, 240))
    draw = ImageDraw.Draw(image)
    for row in range(40):
        draw.text((20, 20 + row * 18), f"line {row}: lorem ipsum dolor sit amet {row * 7919 % 1000}", fill=(30, 30, 30))
    draw.rectangle((400, 300 + step % 50, 640, 420 + step % 50), fill=(255, 0, 255))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


SHOTS: list[bytes] = []  # made before timing starts, so neither approach pays for Pillow


class InstantDesktop:
    def __init__(self) -> None:
        self.times: list[float] = []

    async def tool(self, name: str, input: dict[str, Any], *, version: str = "") -> ToolResult:
        self.times.append(time.perf_counter())
        return ToolResult(image=SHOTS[len(self.times) % len(SHOTS)])


def responder(steps: int, thinking_words: int) -> Any:
    """An instant model: a left_click per step (after a thinking block of ``thinking_words`` words when
    the request enables thinking, as the real API always returns one then), then "done"."""
    def answer(request: Request) -> Any:
        done = sum(1 for m in request.body["messages"] if m["role"] == "assistant")
        if done >= steps:
            return reply(text("done"))
        blocks = [text(f"step {done}"), tool_use("computer", {"action": "left_click", "coordinate": [500, 350]})]
        if thinking_words and request.body.get("thinking", {}).get("type") == "enabled":
            words = " ".join(WORDS[(done * 7 + i) % len(WORDS)] for i in range(thinking_words))
            blocks.insert(0, thinking(words, signature=base64.b64encode(bytes([done % 256]) * 240).decode()))
        return reply(*blocks)
    return answer


_THOUGHT = ("the page shows a search form so I should click the field first then type the query and "
            "press enter before checking the results list for the cheapest option")
WORDS = tuple(_THOUGHT.split(" "))


def cache_order(body: dict[str, Any]) -> bytes:
    parts = [json.dumps(strip(body.get("tools"))), json.dumps(strip(body.get("system"))),
             *(json.dumps(strip(m)) for m in body["messages"])]
    return "\n".join(parts).encode()


Block = tuple[str, float, bool]  # (content, estimated tokens, carries a cache breakpoint)


def token_blocks(body: dict[str, Any]) -> list[Block]:
    """The prompt as (block, estimated tokens, has a cache breakpoint) in cache order; blocks compare by
    content."""
    def tokens(block: dict[str, Any]) -> float:
        if block.get("type") == "image":
            with Image.open(io.BytesIO(base64.b64decode(block["source"]["data"]))) as image:
                return image.width * image.height / 750
        if block.get("type") == "thinking":  # the signature is opaque: not counted (the conservative side)
            return len(block["thinking"]) / 4
        if block.get("type") == "tool_result" and isinstance(block.get("content"), list):
            return 10 + sum(tokens(inner) for inner in block["content"])
        return len(json.dumps(block)) / 4

    tools = body.get("tools") or []
    blocks = [(json.dumps(strip(tools)), sum(tool_tokens(t) for t in tools), any("cache_control" in t for t in tools))]
    blocks += [(json.dumps(strip(b)), tokens(b), "cache_control" in b) for b in body.get("system") or []]
    for message in body["messages"]:
        content = message["content"]
        for block in [{"type": "text", "text": content}] if isinstance(content, str) else content:
            blocks.append((message["role"] + json.dumps(strip(block)), tokens(block), "cache_control" in block))
    return blocks


class PromptCache:
    """A model of Anthropic's prompt cache as its docs describe it, to see what each request would read.

    Each request writes an entry for the prefix ending at each of its breakpoints; it reads the longest
    cached prefix ending at one of its breakpoints or at most ``LOOKBACK`` blocks before one. Left out: the
    5-minute lifetime (the runs here take seconds) and the minimum cacheable length (1,024 tokens; every
    prefix here is longer)."""

    LOOKBACK = 20

    def __init__(self) -> None:
        self.entries: set[bytes] = set()

    def serve(self, blocks: list[Block]) -> tuple[float, float]:
        """(estimated tokens read from the cache, tokens in the request); ``blocks``: ``token_blocks`` of it."""
        digests, running = [], hashlib.sha256()
        for key, _, _ in blocks:
            running.update(hashlib.sha256(key.encode()).digest())
            digests.append(running.copy().digest())
        marks = [i for i, (_, _, marked) in enumerate(blocks) if marked]
        read_upto = 0
        for mark in marks:
            hit = next((j for j in range(mark, max(-1, mark - self.LOOKBACK - 1), -1) if digests[j] in self.entries),
                       None)
            if hit is not None:
                read_upto = max(read_upto, hit + 1)
        self.entries.update(digests[mark] for mark in marks)
        return sum(cost for _, cost, _ in blocks[:read_upto]), sum(cost for _, cost, _ in blocks)


# What Anthropic's computer-use docs give as each tool definition's input-token cost (the computer tool's
# includes the computer-use system prompt it adds); any other tool: its JSON at ~4 characters a token.
TOOL_TOKENS = {"computer": 735 + 466, "bash": 245, "str_replace_based_edit_tool": 700}


def tool_tokens(tool: dict[str, Any]) -> float:
    return TOOL_TOKENS.get(tool.get("name", ""), len(json.dumps(tool)) / 4)


def common_prefix_tokens(a: list[Block], b: list[Block]) -> tuple[float, float]:
    """(tokens of ``b`` that repeat ``a`` block for block from the start, tokens of ``b``); both are
    ``token_blocks`` of a request."""
    shared = 0.0
    for (block_a, _, _), (block_b, cost, _) in zip(a, b, strict=False):
        if block_a != block_b:
            break
        shared += cost
    return shared, sum(cost for _, cost, _ in b)


def common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n
    while lo < hi:  # binary search on equal prefixes
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


# ---- the reference approach ----------------------------------------------------------------------------
def _reference_caching(messages: list[dict[str, Any]]) -> None:
    breakpoints = 3
    for message in reversed(messages):
        if message["role"] == "user" and isinstance(content := message["content"], list):
            if breakpoints:
                breakpoints -= 1
                content[-1]["cache_control"] = {"type": "ephemeral"}
            else:
                content[-1].pop("cache_control", None)
                break


async def reference_run(fake: FakeMessages, steps: int, system: str, tools: list[dict[str, Any]]) -> list[float]:
    desktop = InstantDesktop()
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": "click it"}]}]
    while True:
        client: Any = anthropic.Anthropic(api_key="k", base_url=fake.url, max_retries=4)  # new sync client per step
        _reference_caching(messages)
        raw = client.beta.messages.with_raw_response.create(
            max_tokens=4096, messages=messages, model=MODEL, system=[{"type": "text", "text": system,
                                                                      "cache_control": {"type": "ephemeral"}}],
            tools=tools, betas=["computer-use-2025-11-24"], thinking={"type": "enabled", "budget_tokens": 1024})
        response = raw.parse()
        content = [b.model_dump(exclude_none=True) for b in response.content]
        messages.append({"role": "assistant", "content": content})
        results = []
        for block in content:
            if block["type"] == "tool_use":
                result = await desktop.tool("computer", block["input"])
                image = base64.b64encode(result.image or b"").decode()
                results.append({"type": "tool_result", "tool_use_id": block["id"], "is_error": False,
                                "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                         "data": image}}]})
        client.close()
        if not results:
            return desktop.times
        messages.append({"role": "user", "content": results})


async def ours_run(fake: FakeMessages, steps: int, keep: int, chunk: int) -> list[float]:
    desktop = InstantDesktop()
    client = anthropic.AsyncAnthropic(api_key="k", base_url=fake.url, max_retries=0)
    config = LoopConfig(model=MODEL, tools=toolset_for(MODEL), width=1024, height=768,
                        system=system_prompt(DesktopFacts()), max_tokens=4096, thinking_budget=1024, max_steps=10_000,
                        keep_screenshots=keep, removal_chunk=chunk)
    loop = AgentLoop(client=client, desktop=desktop, policy=ApprovalPolicy("autonomous"), emit=discard, config=config)
    await loop.run("click it")
    await client.close()
    return desktop.times


REMOVAL_SHARE = 0.7  # a request repeating less of the previous one than this followed a screenshot removal
WINDOW = 25  # requests per window in the by-request breakdown (the share grows as the history's text does)


def report(name: str, times: list[float], requests: list[Request], skip: int) -> dict[str, Any]:
    per_step = [(b - a) * 1000 for a, b in itertools.pairwise(times)][skip:]
    sizes = [len(r.raw) for r in requests]
    shares_prev, shares_cur, token_shares = [], [], []
    blocks = [token_blocks(r.body) for r in requests]  # each request's images decoded once
    cache = PromptCache()
    cache.serve(blocks[0])
    cache_reads = []
    for (prev, cur), (prev_blocks, cur_blocks) in zip(itertools.pairwise(requests), itertools.pairwise(blocks),
                                                      strict=True):
        read, total = cache.serve(cur_blocks)
        cache_reads.append(read / total)
        a, b = cache_order(prev.body), cache_order(cur.body)
        n = common_prefix(a, b)
        shares_prev.append(n / len(a))
        shares_cur.append(n / len(b))
        shared, total = common_prefix_tokens(prev_blocks, cur_blocks)
        token_shares.append(shared / total)
    steady_prev, steady_cur, steady_tokens = shares_prev[skip:], shares_cur[skip:], token_shares[skip:]
    row: dict[str, Any] = {"p50_ms": statistics.median(per_step), "p95_ms": statistics.quantiles(per_step, n=20)[18],
           "bytes_last": sizes[-1], "bytes_mean": statistics.mean(sizes),
           "prefix_of_prev_mean": statistics.mean(steady_prev), "prefix_of_prev_p50": statistics.median(steady_prev),
           "prefix_of_cur_mean": statistics.mean(steady_cur), "images_last": len(requests[-1].images),
           "tokens_of_cur_mean": statistics.mean(steady_tokens), "tokens_of_cur_p50": statistics.median(steady_tokens),
           "cache_read_mean": statistics.mean(cache_reads[skip:]),
           "cache_read_p50": statistics.median(cache_reads[skip:])}
    windows = [(lo, min(lo + WINDOW, len(token_shares))) for lo in range(skip, len(token_shares), WINDOW)]
    row["windows"] = [(lo + 1, hi, statistics.mean(token_shares[lo:hi]), statistics.median(token_shares[lo:hi]))
                      for lo, hi in windows if hi > lo]
    print(f"{name:>10}: step p50 {row['p50_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms | request bytes mean "
          f"{row['bytes_mean'] / 1e3:.0f} kB, last {row['bytes_last'] / 1e3:.0f} kB ({row['images_last']} images) | "
          f"prefix of previous: mean {row['prefix_of_prev_mean']:.1%}, median {row['prefix_of_prev_p50']:.1%}; "
          f"of current: mean {row['prefix_of_cur_mean']:.1%} | in tokens, of current: mean "
          f"{row['tokens_of_cur_mean']:.1%}, median {row['tokens_of_cur_p50']:.1%}")
    print("            in tokens, of current, by request: " + "; ".join(
        f"{lo}–{hi}: mean {mean:.1%} median {median:.1%}" for lo, hi, mean, median in row["windows"]))
    removal_reads = [r for r, t in zip(cache_reads[skip:], steady_tokens, strict=True) if t < REMOVAL_SHARE]
    print(f"            read from the prompt cache (a model of it, tokens): mean {row['cache_read_mean']:.1%}, "
          f"median {row['cache_read_p50']:.1%}"
          + (f"; on removal steps {statistics.mean(removal_reads):.1%}" if removal_reads else ""))
    return row


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--keep", type=int, default=5, help="screenshots kept (ours)")
    parser.add_argument("--chunk", type=int, default=3, help="screenshots removed at a time (ours)")
    parser.add_argument("--thinking-words", type=int, default=0,
                        help="words of thinking the fake model returns per step when thinking is on (both sides)")
    args = parser.parse_args()
    SHOTS.extend(screenshot(i) for i in range(50))
    skip = args.keep + 1  # steady state: from the first screenshot removal on
    tools: list[dict[str, Any]] = [
             {"type": "computer_20251124", "name": "computer", "display_width_px": 1024, "display_height_px": 768},
             {"type": "bash_20250124", "name": "bash"},
             {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}]
    print(f"{args.steps} steps, instant fake model over HTTP (SSE for ours, JSON for the reference), "
          f"instant desktop; screenshot PNG {len(screenshot(1)) / 1e3:.0f} kB")
    with FakeMessages() as fake:
        fake.script(*[responder(args.steps, args.thinking_words)] * (args.steps + 1))
        ours_times = await ours_run(fake, args.steps, args.keep, args.chunk)
        ours = report(f"ours {args.keep}/{args.chunk}", ours_times, fake.requests, skip)
    with FakeMessages() as fake:
        fake.script(*[responder(args.steps, args.thinking_words)] * (args.steps + 1))
        ref_times = await reference_run(fake, args.steps, system_prompt(DesktopFacts()), tools)
        ref = report("reference", ref_times, fake.requests, skip)
    print(f"ratios (reference / ours): step p50 {ref['p50_ms'] / ours['p50_ms']:.2f}x, "
          f"mean request bytes {ref['bytes_mean'] / ours['bytes_mean']:.2f}x, "
          f"last request bytes {ref['bytes_last'] / ours['bytes_last']:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
