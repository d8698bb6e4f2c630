"""(c) of bench/cluster_bench.py: sessions per host — K concurrent sessions on one replica, each with its own
real local desktop, for growing K.

Each session's browser shows the desktop bench's site (bench/pages.py: text pages that load in stages); the
scripted model takes ~2 s (uniform 1.6–2.4 s, so sessions drift apart instead of stepping in lockstep), then
clicks the page's "next" link, found by its colour in the request's latest screenshot, as a model would.
Per level, two windows:

- **active**: all K sessions step (one step every ~2 s each);
- **idle**: K-1 sessions wait for the model (their desktops up, idle) while one probe session steps.

A step's time is the service's part of it: from the model's answer to the service's next model request
(act, settle, screenshot, history, request), i.e. the step period minus the model's latency. The first K at which
the median is more than 10 % above K=1 is reported; K keeps growing until both windows were past that at two
levels in a row (one level past it can be noise on a shared machine), or the memory or time bound is hit.
Memory per desktop: RSS and PSS summed over the desktop daemon and its descendants (Xvfb, openbox, Chromium,
…), measured at the end of the active window.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops

from bench.cluster_bench import FINAL, QUIET, Model, create
from bench.pages import NEXT_LINK_RGB, BenchSite
from tests.support.fake_messages import FakeMessages, Reply, Request, reply, tool_use
from tests.web.conftest import make_tokens, wait_for
from tests.web.procs import ServerProcess, desktops_under
from tests.web.test_restart import get, model_env, post

MIB = 2**20
FALLBACK_CLICK = (200, 180)  # where the link is in a maximized window when no screenshot shows it


def link_in(req: Request) -> tuple[int, int]:
    """The centre of the magenta "next" link in the latest screenshot of the request."""
    shots = req.images
    if not shots:
        return FALLBACK_CLICK
    img = Image.open(io.BytesIO(shots[-1])).convert("RGB")
    masks = [band.point(lambda v, c=c: 255 if abs(v - c) <= 15 else 0)
             for band, c in zip(img.split(), NEXT_LINK_RGB, strict=True)]
    box = ImageChops.multiply(ImageChops.multiply(masks[0], masks[1]), masks[2]).getbbox()
    return ((box[0] + box[2]) // 2, (box[1] + box[3]) // 2) if box else FALLBACK_CLICK


class HostModel:
    """Answers ``bench-host-<i>`` sessions; sessions in ``held`` wait (idle) before their answer."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.cond = threading.Condition()
        self.held: set[int] = set()
        self.closed = False
        self.arrived: dict[int, list[float]] = defaultdict(list)
        self.answered: dict[int, list[float]] = defaultdict(list)

    def answer(self, _done: int, req: Request) -> Reply:
        found = re.search(r"bench-host-(\d+)", json.dumps(req.body["messages"][0]))
        idx = int(found[1]) if found else -1
        with self.cond:
            self.arrived[idx].append(req.at)
            self.cond.wait_for(lambda: idx not in self.held or self.closed, timeout=600)
        point = link_in(req)
        time.sleep(random.uniform(0.8, 1.2) * self.latency_s)
        with self.cond:
            self.answered[idx].append(time.time())
        return reply(tool_use("computer", {"action": "left_click", "coordinate": list(point)}))

    def hold(self, idxs: set[int]) -> None:
        with self.cond:
            self.held = idxs
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed, self.held = True, set()
            self.cond.notify_all()

    def steps(self, idxs: list[int], w0: float, w1: float) -> list[float]:
        """Service time of the steps that began (model answered) and ended (next request) inside [w0, w1]."""
        with self.cond:
            out = []
            for i in idxs:
                for done, nxt in zip(self.answered[i], self.arrived[i][1:], strict=False):
                    if done >= w0 and nxt <= w1:
                        out.append(nxt - done)
            return out


def desktop_memory(data_dir: Path) -> list[tuple[int, int, int]]:
    """(RSS, PSS, processes) of each desktop: its daemon and every descendant (each component of a desktop
    leads its own process session, so the tree is what groups them)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    out = []
    for daemon in desktops_under(data_dir):
        tree, todo = set(), [daemon]
        while todo:
            pid = todo.pop()
            tree.add(pid)
            todo.extend(c for c, p in parents.items() if p == pid and c not in tree)
        rss = pss = alive = 0
        for pid in tree:
            with contextlib.suppress(OSError):  # the process ended meanwhile
                rss += _kib(Path(f"/proc/{pid}/status"), "VmRSS:")
                pss += _kib(Path(f"/proc/{pid}/smaps_rollup"), "Pss:")
                alive += 1
        out.append((rss * 1024, pss * 1024, alive))
    return out


def _kib(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def mem_available() -> int:
    return _kib(Path("/proc/meminfo"), "MemAvailable:") * 1024


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole host."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def window(model: HostModel, idxs: list[int], seconds: float) -> dict[str, float]:
    b0, t0 = cpu_times()
    w0 = time.time()
    time.sleep(seconds)
    w1 = time.time()
    b1, t1 = cpu_times()
    xs = model.steps(idxs, w0, w1)
    return {"p50": statistics.median(xs) if xs else float("nan"), "n": len(xs),
            "cpu": 100 * (b1 - b0) / max(1, t1 - t0), "load": float(Path("/proc/loadavg").read_text().split()[0])}


def host_part(model: Model, fake: FakeMessages, root: Path, levels: list[int], seconds: float,
              budget_s: float, latency_s: float = 2.0) -> None:
    site = BenchSite()
    hm = HostModel(latency_s)
    model.on("host", hm.answer, 4000)
    data = root / "host"
    token = make_tokens(data, ["bench"])["bench"]
    server = ServerProcess(data, model_env(fake, DESKPILOT_BROWSER_START_URL=site.url(),
                                           DESKPILOT_MAX_SESSIONS=str(max(levels)), **QUIET)).start()
    started, sids, rows, stop = time.monotonic(), list[str](), list[dict[str, Any]](), ""
    try:
        for k in levels:
            per_desktop = statistics.mean([p for _, p, _ in rows[-1]["mem"]]) if rows else 600 * MIB
            if mem_available() < (k - len(sids)) * per_desktop + 2 * 1024 * MIB:
                stop = f"stopped before K={k}: memory (MemAvailable {mem_available() // MIB} MiB)"
                break
            if time.monotonic() - started > budget_s:
                stop = f"stopped before K={k}: time budget ({budget_s:.0f} s) spent"
                break
            hm.hold(set())
            while len(sids) < k:
                sids.append(create(server, token, f"bench-host-{len(sids)}"))
            wait_for(lambda k=k: all(len(hm.answered[i]) >= 2 for i in range(k)), 300, interval=0.5)
            # K=1 is every ratio's denominator: measured twice as long (it has the fewest steps per second)
            row: dict[str, Any] = {"k": k, "active": window(hm, list(range(k)), seconds * (2 if not rows else 1))}
            row["mem"] = desktop_memory(data)
            row["service_rss"] = _kib(Path(f"/proc/{server.proc.pid}/status"), "VmRSS:") * 1024 \
                if server.proc else 0
            if k > 1:
                hm.hold(set(range(1, k)))  # every session but the probe waits for the model: idle desktops
                time.sleep(latency_s * 1.2 + 1.5)  # steps in flight end first
                row["idle"] = window(hm, [0], seconds)
            else:
                row["idle"] = row["active"]
            rows.append(row)
            print(json.dumps({"k": k, "active": row["active"], "idle": row["idle"],
                              "pss_mib": [p // MIB for _, p, _ in row["mem"]]}), flush=True)
            if len(rows) > 2 and all(r[m]["p50"] > 1.1 * rows[0][m]["p50"] for r in rows[-2:]
                                     for m in ("active", "idle")):
                stop = f"stopped after K={k}: both more than 10 % above K=1 at two levels in a row"
                break
    finally:
        for sid in sids:
            post(server, token, f"/api/sessions/{sid}/cancel")
        hm.close()
        for sid in sids:
            wait_for(lambda sid=sid: get(server, token, f"/api/sessions/{sid}")["status"] in FINAL, 120)
        server.stop()
        site.close()
    host_table(rows, stop, latency_s)


def host_table(rows: list[dict[str, Any]], stop: str, latency_s: float) -> None:
    if not rows:
        print(f"\n(c) sessions per host: nothing measured; {stop}")
        return
    base = rows[0]
    print(f"\n(c) sessions on one replica, one local desktop each; step = the service's part of a step "
          f"(model latency ~{latency_s:g} s excluded)\n"
          f"{'K':>2} {'active p50 ms':>13} {'vs K=1':>7} {'steps':>5} {'cpu %':>5} {'load':>5} | "
          f"{'idle: probe p50 ms':>18} {'vs K=1':>7} {'steps':>5} | {'RSS/desktop':>11} {'PSS/desktop':>11} "
          f"{'procs':>5} {'service RSS':>11}")
    for r in rows:
        a, i = r["active"], r["idle"]
        rss = statistics.mean([m[0] for m in r["mem"]]) / MIB if r["mem"] else float("nan")
        pss = statistics.mean([m[1] for m in r["mem"]]) / MIB if r["mem"] else float("nan")
        procs = statistics.mean([m[2] for m in r["mem"]]) if r["mem"] else float("nan")
        print(f"{r['k']:>2} {a['p50'] * 1000:>13.0f} {a['p50'] / base['active']['p50']:>6.2f}x {a['n']:>5} "
              f"{a['cpu']:>5.0f} {a['load']:>5.1f} | {i['p50'] * 1000:>18.0f} "
              f"{i['p50'] / base['idle']['p50']:>6.2f}x {i['n']:>5} | {rss:>7.0f} MiB {pss:>7.0f} MiB "
              f"{procs:>5.0f} {r['service_rss'] / MIB:>7.0f} MiB")
    for mode in ("active", "idle"):
        over = [r[mode]["p50"] > 1.1 * base[mode]["p50"] for r in rows]
        # sustained: a single level above and the next below again is noise, not the host filling up
        hit = next((r["k"] for i, r in enumerate(rows) if all(over[i:])), None)
        once = [r["k"] for r, o in zip(rows, over, strict=True) if o]
        said = f"more than 10 % above K=1 from K={hit} on" if hit else f"not lastingly 10 % above K=1 up to " \
            f"K={rows[-1]['k']}"
        print(f"{mode}: median step time {said} (levels above: {', '.join(map(str, once)) or 'none'})")
    if pss_all := [m[1] for r in rows for m in r["mem"] if m[1]]:
        pss, total = statistics.mean(pss_all), _kib(Path("/proc/meminfo"), "MemTotal:") * 1024
        print(f"memory alone: {pss / MIB:.0f} MiB PSS per desktop -> ~{int(total // pss)} desktops in this "
              f"host's {total / 2**30:.1f} GiB")
    if stop:
        print(stop)
