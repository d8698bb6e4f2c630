"""The built-in suite (evals/) with its oracle under a simulated model latency: ours against the reference
loop's behaviour, and tasks per minute with N desktops at once.

    .venv/bin/python -m bench.eval_bench [--tasks GLOB] [--latency 1.5] [--parallel 1,2,4] [--no-reference]

Every variant runs the whole harness: the service's runner, a fresh local desktop per task, the scripted
oracle speaking the Messages API through the real SDK (tests/evaluation/oracle.py), each reply held back
``--latency`` seconds. Rows:

- ``ours``: our loop as users get it (settled screenshot after each action);
- ``reference``: the Anthropic computer-use demo's behaviour: after each action a fixed 2 s sleep, then one
  fresh screenshot (our settle turned off with DESKPILOT_SETTLE_CAP_MS=0; input stays XTest, not xdotool);
- ``ours Nx``: ours with N desktops at once, for tasks per minute.

``agent s`` sums each task's time from the end of its setup to its score (the loop's part; the desktop's
start is the same on both sides). Each variant runs once (the machine is shared): the figures move with load.
It asserts only that the oracle passed every task in each variant.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from deskpilot.settings import Settings
from evaluation.harness import EvalOptions, Harness
from evaluation.tasks import load_suite
from tests.evaluation.oracle import ScriptedAgent
from tests.support.fake_messages import FakeMessages, Reply, Request

EVALS = Path(__file__).resolve().parents[1] / "evals"
REFERENCE_SLEEP_S = 2.0
NO_SCREEN_CHANGE = ("screenshot", "zoom", "cursor_position")


class ReferenceClient:
    """A desktop client that acts like the reference loop: act, sleep a fixed 2 s, take one screenshot."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def tool(self, name: str, input: dict[str, Any], *, version: str = "computer_20250124") -> Any:
        result = await self._inner.tool(name, input, version=version)
        if name != "computer" or input.get("action") in NO_SCREEN_CHANGE or result.is_error:
            return result
        await asyncio.sleep(REFERENCE_SLEEP_S)
        shot = await self._inner.screenshot(version=version)
        return dataclasses.replace(result, image=shot.image)


def run(pattern: str | None, latency: float, parallel: int, reference: bool) -> dict[str, Any]:
    suite = load_suite(EVALS, pattern)
    saved = os.environ.get("DESKPILOT_SETTLE_CAP_MS")
    if reference:
        os.environ["DESKPILOT_SETTLE_CAP_MS"] = "0"  # read by each desktop daemon at start
    try:
        with FakeMessages() as fake, tempfile.TemporaryDirectory(prefix="eval-bench-") as tmp:
            agent = ScriptedAgent(suite, "oracle")

            def slow(request: Request) -> Reply:
                return dataclasses.replace(agent.respond(request), delay_s=latency)

            fake.script(*([slow] * (40 * len(suite.tasks))))
            settings = Settings(data_dir=Path(tmp) / "unused", anthropic_api_key=SecretStr("sk-bench"),
                                anthropic_base_url=fake.url, model="claude-opus-4-5", thinking_budget_tokens=0)
            options = EvalOptions(parallel=parallel, timeout_s=600, export=False)
            started = time.monotonic()
            results = asyncio.run(Harness(settings, suite, Path(tmp) / "out", options, lambda line: None,
                                          ReferenceClient if reference else None).run())
            wall = time.monotonic() - started
            runs = results.runs
            return {"tasks": len(runs), "passed": sum(r["success"] for r in runs), "wall_s": wall,
                    "calls": len(fake.requests), "agent_s": sum(r["agent_s"] or 0.0 for r in runs)}
    finally:
        if saved is None:
            os.environ.pop("DESKPILOT_SETTLE_CAP_MS", None)
        else:
            os.environ["DESKPILOT_SETTLE_CAP_MS"] = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=None, help="only task ids matching this glob (default: all)")
    parser.add_argument("--latency", type=float, default=1.5, help="seconds per model call")
    parser.add_argument("--parallel", default="1,2,4", help="desktops at once for the tasks/min rows")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference row")
    args = parser.parse_args()
    levels = [int(n) for n in args.parallel.split(",") if n.strip()]
    rows: list[tuple[str, dict[str, Any]]] = []
    first = levels[0] if levels else 1
    rows.append((f"ours {first}x", run(args.tasks, args.latency, first, reference=False)))
    if not args.no_reference:
        rows.append((f"reference {first}x", run(args.tasks, args.latency, first, reference=True)))
    for n in levels[1:]:
        rows.append((f"ours {n}x", run(args.tasks, args.latency, n, reference=False)))
    print(f"suite evals/ ({args.tasks or 'all tasks'}), model latency {args.latency} s per call")
    print(f"{'variant':<16}{'tasks':>6}{'passed':>8}{'model calls':>13}{'wall s':>9}{'agent s':>9}{'tasks/min':>11}")
    for name, r in rows:
        print(f"{name:<16}{r['tasks']:>6}{r['passed']:>8}{r['calls']:>13}{r['wall_s']:>9.1f}{r['agent_s']:>9.1f}"
              f"{60 * r['tasks'] / r['wall_s']:>11.2f}")
    if not args.no_reference:
        ours, ref = rows[0][1], rows[1][1]
        print(f"reference / ours: wall time {ref['wall_s'] / ours['wall_s']:.2f}x, "
              f"agent time (setup done → scored) {ref['agent_s'] / ours['agent_s']:.2f}x")
    for name, r in rows:
        assert r["passed"] == r["tasks"], f"{name}: the oracle failed {r['tasks'] - r['passed']} task(s)"


if __name__ == "__main__":
    main()
