"""Live viewing cost: agent step time and delivered frames per second with 0, 10 and 50 viewers.

    .venv/bin/python -W ignore bench/web_bench.py --steps 20 --viewers 0,10,50 --model-latency 1.0

``--model-latency`` is how long the fake model takes per call (real computer-use calls take seconds);
``--model-latency 0`` is the worst case, where the agent acts back to back and frames slow to 2 fps during
actions by design. ``--no-reference`` skips the per-viewer VNC runs.

Ours: every viewer is a WebSocket on /api/sessions/{id}/stream; the service fetches one JPEG per change from
the desktop and fans it out (bounded queues, newest frame only). Reference approach (the reference demo's
noVNC-per-viewer): every viewer holds its own RFB connection (through our /vnc proxy, view-only) and pulls
framebuffer updates itself, so x11vnc encodes per viewer. The desktop shows an animated page, the model
(a local fake of the Messages API, real SDK) asks for a screenshot every step.
Targets: 50 viewers at >= 10 fps; step time within 10 % of no viewers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import queue
import struct
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import websockets

from tests.support.fake_messages import FakeMessages, Reply, Request, reply, text, tool_use
from tests.web.conftest import make_tokens
from tests.web.procs import ServerProcess

PAGE = b"""<!doctype html><body style="margin:0;background:#123">
<div id=b style="position:absolute;width:300px;height:300px;background:#f0c"></div>
<h1 id=t style="color:#fff;font:80px monospace;position:absolute;top:400px;left:40px"></h1>
<script>let n=0;function f(){n++;const b=document.getElementById('b');
b.style.left=(200+180*Math.sin(n/20))+'px';b.style.top=(60+40*Math.cos(n/15))+'px';
document.getElementById('t').textContent='frame '+n;requestAnimationFrame(f)}f()</script></body>"""


class Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: Any) -> None:
        pass


def model(steps: int, ready: threading.Event, latency_s: float) -> Any:
    def answer(req: Request) -> Reply:
        done = sum(1 for m in req.body["messages"] if m["role"] == "assistant")
        if done == 0:
            ready.wait(120)  # the measured steps start once every viewer is connected
        if done >= steps:
            return reply(text("done"), delay_s=latency_s)
        return reply(tool_use("computer", {"action": "screenshot"}), delay_s=latency_s)

    return answer


async def stream_viewer(url: str, token: str, counts: list[int], idx: int, stop: asyncio.Event,
                        connected: Any) -> None:
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                  max_size=None, compression=None) as ws:
        await ws.recv()  # hello
        connected()
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            if isinstance(msg, bytes):
                counts[idx] += 1


async def vnc_viewer(url: str, token: str, counts: list[int], idx: int, stop: asyncio.Event,
                     connected: Any) -> None:
    """An RFB client like a noVNC tab: raw encoding, keeps asking for incremental updates."""
    while True:  # the VNC endpoint answers 409 until the session's desktop is up
        try:
            ws = await websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                          max_size=None, compression=None)
            break
        except websockets.InvalidStatus:
            await asyncio.sleep(0.2)
    async with ws:
        buf = bytearray()

        async def read(n: int) -> bytes:
            while len(buf) < n:
                chunk = await ws.recv()
                buf.extend(chunk.encode() if isinstance(chunk, str) else chunk)  # RFB frames are binary
            out = bytes(buf[:n])
            del buf[:n]
            return out

        await read(12)
        await ws.send(b"RFB 003.008\n")
        await read((await read(1))[0])
        await ws.send(b"\x01")
        await read(4)
        await ws.send(b"\x01")
        width, height = struct.unpack(">HH", await read(4))
        await read(16)
        await read(struct.unpack(">I", await read(4))[0])
        pixel_format = struct.pack(">BBBBHHHBBBxxx", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
        await ws.send(b"\x00\x00\x00\x00" + pixel_format)
        await ws.send(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: raw only
        request = struct.pack(">BBHHHH", 3, 1, 0, 0, width, height)
        connected()
        await ws.send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
        while not stop.is_set():
            kind = (await read(1))[0]
            if kind == 0:
                (rects,) = struct.unpack(">xH", await read(3))
                for _ in range(rects):
                    _, _, w, h, enc = struct.unpack(">HHHHi", await read(12))
                    if enc == 0:
                        await read(w * h * 4)
                counts[idx] += 1
                await ws.send(request)
            elif kind == 2:  # bell
                continue
            elif kind == 3:
                await read(3)
                await read(struct.unpack(">I", await read(4))[0])
            else:
                raise RuntimeError(f"unexpected RFB message {kind}")


async def run_one(svc: Any, fake: FakeMessages, steps: int, viewers: int, mode: str,
                  latency_s: float) -> dict[str, float]:
    ready = threading.Event()
    fake.script(*([model(steps, ready, latency_s)] * (steps + 2)))
    token = svc.tokens["alice"]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=svc.url, headers=headers, timeout=60) as c:
        sid = (await c.post("/api/sessions", json={"task": "bench", "policy": {"preset": "autonomous"}})).json()["id"]
        path = "stream" if mode == "ours" else "vnc"
        # Viewers live in another process, as browsers would: they must not share this process's GIL.
        ctx = multiprocessing.get_context("spawn")
        stop, results = ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=viewers_main, args=(mode, f"{svc.ws_url}/api/sessions/{sid}/{path}", token,
                                                       viewers, stop, results))
        if viewers:
            proc.start()
            try:
                await asyncio.to_thread(results.get, True, 90)
            except queue.Empty:  # measured anyway: viewers that never connected count 0 frames
                print(f"{mode}: not all {viewers} viewers connected within 90 s", file=sys.stderr, flush=True)
        ready.set()
        while True:
            body = (await c.get(f"/api/sessions/{sid}")).json()
            if body["status"] in ("succeeded", "failed", "cancelled"):
                break
            await asyncio.sleep(0.1)
        counts: list[int] = []
        if viewers:
            stop.set()
            got = await asyncio.to_thread(results.get, True, 60)
            counts = got if isinstance(got, list) else await asyncio.to_thread(results.get, True, 60)
            await asyncio.to_thread(proc.join, 30)
            if proc.is_alive():
                proc.kill()
        evs = (await c.get(f"/api/sessions/{sid}/events")).json()["items"]
    calls = [e for e in evs if e["type"] == "tool_call"]
    tool_results = [e for e in evs if e["type"] == "tool_result"]
    t0 = _ts(calls[0]["ts"])
    t1 = _ts(next(e for e in reversed(evs) if e["type"] == "status")["ts"])
    step = (_ts(tool_results[-1]["ts"]) - t0) / max(1, len(tool_results) - 1) if len(tool_results) > 1 else float("nan")
    span = t1 - t0
    fps = [n / span for n in counts] if counts else []
    return {"step_s": step, "fps_min": min(fps) if fps else 0.0, "fps_mean": sum(fps) / len(fps) if fps else 0.0,
            "steps": float(len(tool_results))}


def viewers_main(mode: str, url: str, token: str, n: int, stop: Any, results: Any) -> None:
    async def go() -> list[int]:
        counts, done, up = [0] * n, asyncio.Event(), [0]

        def connected() -> None:
            up[0] += 1
            if up[0] == n:
                results.put("ready")

        viewer = stream_viewer if mode == "ours" else vnc_viewer
        tasks = [asyncio.create_task(viewer(url, token, counts, i, done, connected)) for i in range(n)]
        while not stop.is_set():
            await asyncio.sleep(0.1)
        done.set()
        for task in tasks:
            task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception) and not isinstance(outcome, websockets.ConnectionClosed):
                print(f"viewer failed: {outcome!r}", file=sys.stderr)
        return counts

    results.put(asyncio.run(go()))


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--viewers", default="0,10,50")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--model-latency", type=float, default=0.0,
                        help="seconds the fake model takes per call (real calls take seconds; 0 = worst case)")
    args = parser.parse_args()
    counts = [int(v) for v in args.viewers.split(",")]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    page_url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    rows: list[tuple[str, int, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp, FakeMessages() as fake:
        # The service runs as `deskpilot serve` in its own process, as deployed; the fake model and the
        # viewers live in other processes, so nobody shares the service's GIL.
        data = Path(tmp) / "data"
        tokens = make_tokens(data, ["alice"])
        server = ServerProcess(data, {
            "ANTHROPIC_API_KEY": "sk-bench", "ANTHROPIC_BASE_URL": fake.url, "DESKPILOT_MODEL": "claude-opus-4-5",
            "DESKPILOT_THINKING_BUDGET_TOKENS": "0", "DESKPILOT_BROWSER_START_URL": page_url,
            "DESKPILOT_MAX_SESSIONS": "1", "DESKPILOT_RATE_LIMIT_PER_MINUTE": "1000000",
            "DESKPILOT_LOG_FORMAT": "json"}).start()
        svc = SimpleNamespace(url=server.url, ws_url=server.url.replace("http://", "ws://"), tokens=tokens)
        try:
            modes = ["ours"] + ([] if args.no_reference else ["reference"])
            for mode in modes:
                for n in counts:
                    if mode == "reference" and n == 0:
                        continue
                    result = asyncio.run(run_one(svc, fake, args.steps, n, mode, args.model_latency))
                    rows.append((mode, n, result))
                    print(json.dumps({"mode": mode, "viewers": n, **{k: round(v, 4) for k, v in result.items()}}),
                          flush=True)
        finally:
            server.stop()
            httpd.shutdown()
    base = next(r for m, n, r in rows if m == "ours" and n == 0)["step_s"] if 0 in counts else float("nan")
    print(f"\n{'approach':<10} {'viewers':>7} {'step s':>8} {'vs 0':>7} {'fps min':>8} {'fps mean':>9}")
    for mode, n, r in rows:
        print(f"{mode:<10} {n:>7} {r['step_s']:>8.3f} {r['step_s'] / base:>6.2f}x {r['fps_min']:>8.1f} "
              f"{r['fps_mean']:>9.1f}")
    for n in counts:
        ours = next((r for m, v, r in rows if m == "ours" and v == n), None)
        ref = next((r for m, v, r in rows if m == "reference" and v == n), None)
        if ours and ref and n:
            print(f"{n} viewers: step time ours/reference = {ours['step_s'] / ref['step_s']:.2f}, "
                  f"fps ours/reference = {ours['fps_mean'] / max(ref['fps_mean'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
