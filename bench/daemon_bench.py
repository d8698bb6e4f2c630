"""Desktop daemon benchmark: what the agent waits for, over the wire, against the reference demo's pipeline.

    .venv/bin/python -m bench.daemon_bench [--trials 20]

Starts one desktop daemon (``desktop.local``: Xvfb + openbox + x11vnc + Chromium in kiosk mode, 1024×768,
HTTP over a unix socket) and prints medians, p95 and ratios (reference median / ours median) for:

1. desktop ready — ours: ``deskpilot desktopd`` subprocess until ``/healthz`` answers (Xvfb, openbox, x11vnc
   and Chromium each probed); reference: the demo's start scripts' polling (Xvfb + ``xdpyinfo`` every 0.1 s,
   window manager checked every 1 s, x11vnc every 1 s), run for real, without a browser;
2. screenshot tool call — ours: ``DesktopClient.screenshot()`` (HTTP, X thread, MIT-SHM grab, PNG, base64
   JSON, decode); reference: ``scrot -p`` + ``convert -resize WxH!`` + base64 in process (no HTTP at all);
3. click → screenshot — ours: ``left_click`` through the daemon, which settles and returns the screenshot;
   reference: ``xdotool mousemove X Y click 1`` + ``sleep 2.0`` + scrot + convert + base64.

Not a test: it prints numbers and asserts only that both sides did the work.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from deskpilot.settings import Settings
from desktop import probes
from desktop.local import LocalDesktop

Row = tuple[str, list[float], list[float]]
SIZE = (1024, 768)


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def reference_screenshot(display: str, tmp: Path, xauthority: Path | None = None) -> str:
    env = {**os.environ, "DISPLAY": display}
    if xauthority is not None:
        env["XAUTHORITY"] = str(xauthority)  # the daemon's X server admits only holders of its cookie
    shot, scaled = tmp / "shot.png", tmp / "scaled.png"
    subprocess.run(["scrot", "-p", "-o", str(shot)], env=env, check=True, capture_output=True)
    subprocess.run(["convert", str(shot), "-resize", f"{SIZE[0]}x{SIZE[1]}!", str(scaled)],
                   env=env, check=True, capture_output=True)
    return base64.b64encode(scaled.read_bytes()).decode()


def poll(check: Callable[[], bool], interval: float, timeout: float = 30.0) -> None:
    """The reference scripts' readiness loops: check, then sleep ``interval``, until ready."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("reference component did not come up")
        time.sleep(interval)


def reference_start(tmp: Path) -> float:
    """The demo's start scripts, run for real with their polling cadence: Xvfb then ``xdpyinfo`` every 0.1 s,
    the window manager (openbox here, mutter there) checked every 1 s, x11vnc checked every 1 s (its
    socket file here, ``netstat`` for port 5900 there). No browser: the demo starts none, ours does."""
    t0 = time.perf_counter()
    read_fd, write_fd = os.pipe()
    procs = [subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-nolisten", "tcp", "-screen", "0",
                               f"{SIZE[0]}x{SIZE[1]}x24"], pass_fds=(write_fd,), stderr=subprocess.DEVNULL)]
    os.close(write_fd)
    sock = tmp / "ref-vnc.sock"
    try:
        display = ":" + os.read(read_fd, 16).decode().strip()
        env = {**os.environ, "DISPLAY": display}
        poll(lambda: subprocess.run(["xdpyinfo"], env=env, capture_output=True).returncode == 0, 0.1)
        procs.append(subprocess.Popen(["openbox", "--sm-disable"], env=env, stderr=subprocess.DEVNULL))
        poll(lambda: probes.wm_ready(display), 1.0)
        sock.unlink(missing_ok=True)
        procs.append(subprocess.Popen(["x11vnc", "-display", display, "-rfbport", "0", "-noipv6", "-rfbportv6",
                                       "-1", "-unixsock", str(sock), "-forever", "-shared", "-nopw", "-quiet"],
                                      env=env, stderr=subprocess.DEVNULL))
        poll(sock.exists, 1.0)
        return time.perf_counter() - t0
    finally:
        os.close(read_fd)
        for proc in reversed(procs):
            proc.terminate()
            proc.wait()


async def ours_start(tmp: Path) -> float:
    t0 = time.perf_counter()
    desk = LocalDesktop(*SIZE, start_url="about:blank", data_dir=tmp, kiosk=True, settings=Settings())
    await desk.start()
    elapsed = time.perf_counter() - t0
    await desk.stop()
    return elapsed


async def run(trials: int) -> list[Row]:
    tmp = Path(tempfile.mkdtemp(prefix="daemon-bench-"))
    rows: list[Row] = []
    try:
        start_trials = max(3, trials // 5)
        ours = [await ours_start(tmp) for _ in range(start_trials)]
        ref = [reference_start(tmp) for _ in range(start_trials)]
        rows.append(("desktop ready (s)", ours, ref))

        async with LocalDesktop(*SIZE, start_url="about:blank", data_dir=tmp, kiosk=True, settings=Settings()) as desk:
            ours, ref = [], []
            for _ in range(trials):
                t0 = time.perf_counter()
                shot = await desk.client.screenshot()
                ours.append(time.perf_counter() - t0)
                assert shot.image is not None and not shot.is_error
                t0 = time.perf_counter()
                assert reference_screenshot(desk.display, tmp, desk.xauthority)
                ref.append(time.perf_counter() - t0)
            rows.append(("screenshot tool call (s)", ours, ref))

            ours, ref = [], []
            env = {**os.environ, "DISPLAY": desk.display, "XAUTHORITY": str(desk.xauthority)}
            for i in range(max(3, trials // 4)):
                x, y = 100 + 7 * i, 200 + 5 * i
                t0 = time.perf_counter()
                result = await desk.client.tool("computer", {"action": "left_click", "coordinate": [x, y]})
                ours.append(time.perf_counter() - t0)
                assert result.image is not None and not result.is_error, result.error
                t0 = time.perf_counter()
                subprocess.run(["xdotool", "mousemove", str(x + 3), str(y), "click", "1"], env=env, check=True)
                time.sleep(2.0)
                assert reference_screenshot(desk.display, tmp, desk.xauthority)
                ref.append(time.perf_counter() - t0)
            rows.append(("click → screenshot (s)", ours, ref))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    rows = asyncio.run(run(args.trials))
    print(f"{'row':28} {'ours med':>10} {'ours p95':>10} {'ref med':>10} {'ref p95':>10} {'ratio':>7}")
    for name, ours, ref in rows:
        ratio = statistics.median(ref) / statistics.median(ours)
        print(f"{name:28} {statistics.median(ours):10.4f} {p95(ours):10.4f} {statistics.median(ref):10.4f} "
              f"{p95(ref):10.4f} {ratio:6.1f}x")


if __name__ == "__main__":
    main()
