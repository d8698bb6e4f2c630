"""Where the watchdog's thresholds come from: the longest streaks innocent runs reach, against agents that get
nowhere, on the built-in suite (evals/) with real desktops.

    .venv/bin/python -m bench.watchdog_bench [--tasks GLOB] [--drift-tasks GLOB] [--latency 1.5]

Each scripted agent (tests/evaluation/oracle.py) runs the suite through the whole harness with every watchdog
detector off, then each run's stored events go through a watchdog again (agent/watchdog.py, its counters
only) to find the longest streak of each kind:

- ``repeat``: the same action with no change (or back to a screen already seen), what ``stuck_repeat`` counts;
- ``no change``: actions in a row after which the screen looked the same (``no_progress``);
- ``looks``: screenshot/zoom calls in a row (``rereading``);
- ``tokens/min``: the most full-price tokens sent in any 60 s, estimated from the requests as the model got
  them (each image ``w*h/750`` tokens, Anthropic's rule; text 4 characters a token): ``uncached`` counts every
  request whole (a provider without prompt caching), ``cached`` only each request's newest turn (the loop's
  cache breakpoints make the rest cache reads, which the watchdog does not count).

``oracle`` solves each task as directly as a model could; ``random`` clicks five random points. ``stuck``,
``staring`` and ``fidgeting`` are the failures the detectors exist for (the same click, only screenshots, a
new dead spot each time); they run 40 calls on ``--drift-tasks``. A threshold belongs above every innocent
streak and well below the 40 calls a drifting agent would waste. The model's latency (``--latency``) sets the
call rate, so it matters for tokens per minute only.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from agent.events import Event
from agent.watchdog import Watchdog, WatchdogConfig
from deskpilot.settings import Settings
from evaluation.harness import EvalOptions, Harness
from evaluation.tasks import load_suite
from tests.evaluation.oracle import ScriptedAgent
from tests.support.fake_messages import FakeMessages, Reply, Request
from web.store import Store
from web.trajectory import all_events

EVALS = Path(__file__).resolve().parents[1] / "evals"
INNOCENT, DRIFTING = ("oracle", "random"), ("stuck", "staring", "fidgeting")
WINDOW_S = 60.0


@dataclasses.dataclass
class Streaks:
    repeat: int = 0
    no_change: int = 0
    looks: int = 0
    uncached_per_min: int = 0
    cached_per_min: int = 0
    calls: int = 0

    def widen(self, other: Streaks) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, max(getattr(self, f.name), getattr(other, f.name)))


def streaks_of(events: list[Event]) -> Streaks:
    """The longest streak of each kind in one run's events, counted by the watchdog itself."""
    dog, found = Watchdog(WatchdogConfig(repeat_limit=0, no_change_limit=0, reread_limit=0,
                                         max_tokens_per_minute=0, max_cost_per_minute=0)), Streaks()
    for event in events:
        dog.observe(event)
        found.repeat, found.no_change = max(found.repeat, dog.repeats), max(found.no_change, dog.unchanged)
        found.looks = max(found.looks, dog.looks)
    return found


def _tokens(blocks: Any) -> int:
    if isinstance(blocks, str):
        return len(blocks) // 4
    total = 0
    for block in blocks if isinstance(blocks, list) else []:
        if block.get("type") == "image":
            total += round(1024 * 768 / 750)  # every screen here is 1024×768 (the suite's default)
        elif block.get("type") == "tool_result":
            total += _tokens(block.get("content") or [])
        else:
            total += len(json.dumps(block)) // 4
    return total


def rates_of(requests: list[Request]) -> tuple[int, int]:
    """Peak full-price tokens in any 60 s of one run: (whole requests, newest turns only)."""
    sized = [(r.at, sum(_tokens(m["content"]) for m in r.body["messages"]) + len(json.dumps(r.body.get("tools")))
              // 4, _tokens(r.body["messages"][-1]["content"])) for r in requests]
    best = [0, 0]
    for i, (start, _, _) in enumerate(sized):
        window = [s for s in sized[i:] if s[0] - start <= WINDOW_S]
        best = [max(best[0], sum(s[1] for s in window)), max(best[1], sum(s[2] for s in window))]
    return best[0], best[1]


async def _stored_events(data_dir: Path, session_id: str) -> list[Event]:
    store = Store(data_dir)
    try:
        # The image's name is its content hash: as good as its bytes for "the same screen again".
        return [Event(r.type, r.data, image=r.image_ref.encode() if r.image_ref else None)  # type: ignore[arg-type]
                for r in await all_events(store, session_id)]
    finally:
        await store.close()


def run(mode: str, pattern: str | None, latency: float, calls: int) -> dict[str, Streaks]:
    suite = load_suite(EVALS, pattern)
    with FakeMessages() as fake, tempfile.TemporaryDirectory(prefix="watchdog-bench-") as tmp:
        agent = ScriptedAgent(suite, mode)
        by_task: dict[str, list[Request]] = defaultdict(list)

        def slow(request: Request) -> Reply:
            by_task[agent._task(request)[0].id].append(request)
            return dataclasses.replace(agent.respond(request), delay_s=latency)

        fake.script(*([slow] * (calls * len(suite.tasks))))
        settings = Settings(data_dir=Path(tmp) / "unused", anthropic_api_key=SecretStr("sk-bench"),
                            anthropic_base_url=fake.url,
                            model="claude-opus-4-5", thinking_budget_tokens=0, watchdog_repeat_limit=0,
                            watchdog_no_change_limit=0, watchdog_reread_limit=0, watchdog_max_tokens_per_minute=0,
                            watchdog_max_cost_per_minute=0.0)  # every detector off: measure, never pause
        out = Path(tmp) / "out"
        results = asyncio.run(Harness(settings, suite, out, EvalOptions(parallel=2, timeout_s=600, export=False,
                                                                        max_steps=calls + 5),
                                      lambda line: None).run())
        found: dict[str, Streaks] = {}
        for r in results.runs:
            streaks = streaks_of(asyncio.run(_stored_events(out / "data", r["session_id"])))
            streaks.uncached_per_min, streaks.cached_per_min = rates_of(by_task[r["task_id"]])
            streaks.calls = len(by_task[r["task_id"]])
            found[r["task_id"]] = streaks
            if mode == "oracle" and not r["success"]:
                raise SystemExit(f"the oracle failed {r['task_id']}: {r['error']}")
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default=None, help="the innocent agents' tasks (default: the whole suite)")
    parser.add_argument("--drift-tasks", default="nav-kettle,form-contact,table-sort")
    parser.add_argument("--latency", type=float, default=1.5, help="seconds per model reply")
    args = parser.parse_args()
    defaults = Settings(data_dir=Path(tempfile.gettempdir()))
    rows: list[tuple[str, Streaks, str]] = []
    for mode in (*INNOCENT, *DRIFTING):
        drifting = mode in DRIFTING
        pattern = args.drift_tasks if drifting else args.tasks
        found = run(mode, pattern, args.latency, 40 if drifting else 30)
        worst, longest = Streaks(), {}
        for task_id, streaks in found.items():
            for f in ("repeat", "no_change", "looks", "uncached_per_min"):
                if getattr(streaks, f) > getattr(worst, f):
                    longest[f] = task_id
            worst.widen(streaks)
        rows.append((mode, worst, ", ".join(f"{k}: {v}" for k, v in longest.items())))
        print(f"{mode}: {len(found)} runs, {sum(s.calls for s in found.values())} model calls", flush=True)
    print("\n| agent | repeat | no change | looks | tokens/min uncached | tokens/min cached | longest in |")
    print("|---|---|---|---|---|---|---|")
    for mode, worst, where in rows:
        print(f"| {mode} | {worst.repeat} | {worst.no_change} | {worst.looks} | {worst.uncached_per_min:,} | "
              f"{worst.cached_per_min:,} | {where} |")
    print(f"| **defaults** | {defaults.watchdog_repeat_limit} | {defaults.watchdog_no_change_limit} | "
          f"{defaults.watchdog_reread_limit} | {defaults.watchdog_max_tokens_per_minute:,} (both) | | |")


if __name__ == "__main__":
    main()
