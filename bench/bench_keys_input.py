"""Keyboard input: our in-process XTest against the reference demo's xdotool subprocesses, in one run.

    .venv/bin/python -m bench.bench_keys_input [--trials 15]

Rows (medians, p95, ratio = reference median / ours median); every trial is checked against what the test
page (``tests/support/testpage.py``) recorded, and texts that did not arrive intact are counted as wrong:

1. key combination ``ctrl+shift+Z`` — ours: ``parse_key_action`` + ``XInput.press_combos``;
   reference: ``xdotool key -- ctrl+shift+Z`` (one subprocess);
2. typing 20 characters outside the US layout (``é ß 漢字 🙂 …``) — ours: spare-keycode binding in runs;
   reference: ``xdotool type --delay 12`` (it also rebinds a scratch keycode, per character);
3. typing 500 ASCII characters — ours: ``XInput.type_text``; reference: chunks of 50 characters, each
   ``xdotool type --delay 12 -- chunk`` (the demo's ``TYPING_GROUP_SIZE``).

Not a test: it prints numbers. "wrong" counts texts whose field did not end up exactly equal to the text.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import string
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deskpilot.settings import Settings
from desktop.display import Desktop
from desktop.input import XInput
from desktop.keys import parse_key_action
from tests.support.testpage import TestPageServer, focus_field

Row = tuple[str, list[float], list[float], int, int]  # name, ours ms, reference ms, ours wrong, reference wrong
UNICODE = "éßüñ漢字かな한글€αβγ🙂Ωжш中文"


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def xdotool(display: str, *args: str) -> None:
    subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display}, check=True, capture_output=True)


def clear_field(inp: XInput, page: TestPageServer) -> None:
    focus_field(page, inp)


def typed(page: TestPageServer, text: str, timeout: float = 10) -> bool:
    try:
        page.wait_until(lambda evs: any(e["type"] == "input" and e["value"] == text for e in evs), timeout)
    except AssertionError:
        return False
    return True


def run_typing(inp: XInput, page: TestPageServer, texts: list[str], ours_fn: Callable[[str], None],
               ref_fn: Callable[[str], None]) -> tuple[list[float], list[float], int, int]:
    """Times per side, and how many texts each side got wrong (the field did not end up equal)."""
    ours: list[float] = []
    ref: list[float] = []
    wrong = [0, 0]
    for i, text in enumerate(texts):
        clear_field(inp, page)
        t0 = time.perf_counter()
        (ours_fn if i % 2 == 0 else ref_fn)(text)
        (ours if i % 2 == 0 else ref).append((time.perf_counter() - t0) * 1000)
        if not typed(page, text):  # checked before the next trial; not part of the timing
            wrong[i % 2] += 1
        # xdotool rebinds a scratch keycode per character: let the browser finish those keymap reloads so
        # they do not spill into the next trial (not timed).
        time.sleep(0.5)
    return ours, ref, wrong[0], wrong[1]


def bench(trials: int) -> list[Row]:
    rows: list[Row] = []
    with TestPageServer() as page:
        desktop = Desktop(1024, 768, start_url=page.url, kiosk=True, wm=True, vnc=False, settings=Settings()).start()
        try:
            page.wait_ready()
            d = desktop.display
            with XInput(d) as inp:
                clear_field(inp, page)
                ours: list[float] = []
                ref: list[float] = []
                for i in range(2 * trials):
                    t0 = time.perf_counter()
                    if i % 2 == 0:
                        inp.press_combos(parse_key_action("ctrl+shift+Z"))
                    else:
                        xdotool(d, "key", "--", "ctrl+shift+Z")
                    (ours if i % 2 == 0 else ref).append((time.perf_counter() - t0) * 1000)
                    time.sleep(0.03)
                # xdotool releases the modifiers before the key (so its keyup is "z"): count by code.
                page.wait_until(lambda evs: sum(e["type"] == "keyup" and e["code"] == "KeyZ" for e in evs)
                                >= 2 * trials)
                rows.append(("key ctrl+shift+Z", ours, ref, 0, 0))

                rng = random.Random(7)
                texts = ["".join(rng.sample(UNICODE, 20)) for _ in range(2 * trials)]
                rows.append(("type 20 non-layout characters",
                             *run_typing(inp, page, texts, inp.type_text,
                                         lambda t: xdotool(d, "type", "--delay", "12", "--", t))))

                alphabet = string.ascii_letters + string.digits + " .,-"
                texts = ["".join(rng.choice(alphabet) for _ in range(500)) for _ in range(max(2, trials // 3) * 2)]

                def ref_chunks(text: str) -> None:
                    for k in range(0, len(text), 50):
                        xdotool(d, "type", "--delay", "12", "--", text[k:k + 50])

                rows.append(("type 500 ASCII characters", *run_typing(inp, page, texts, inp.type_text, ref_chunks)))
        finally:
            desktop.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=15)
    args = parser.parse_args()
    rows = bench(args.trials)
    print(f"\n{'':32s} {'ours median':>12s} {'p95':>9s} {'reference median':>17s} {'p95':>9s} {'ratio':>7s}"
          f" {'wrong: ours':>12s} {'ref':>4s}")
    for name, ours, ref, ours_wrong, ref_wrong in rows:
        mo, mr = statistics.median(ours), statistics.median(ref)
        print(f"{name:32s} {mo:10.1f}ms {p95(ours):7.1f}ms {mr:15.1f}ms {p95(ref):7.1f}ms {mr / mo:6.1f}×"
              f" {ours_wrong:>5d}/{len(ours):<6d} {ref_wrong:d}/{len(ref)}")
    print(f"\n(trials per cell: {args.trials}, 500-character rows: {max(2, args.trials // 3)}; "
          "ratio = reference median / ours median)")


if __name__ == "__main__":
    main()
