"""Scale-out figures (issue 13 item 6): failover time after kill -9, event latency across replicas, sessions
per host.

    .venv/bin/python -m bench.cluster_bench [--only failover,latency,host] [--trials 5] [--steps 60]
        [--levels 1,2,4,6,8] [--window 20]

(a) failover: two real ``deskpilot serve`` replicas on a throwaway PostgreSQL (tests/web/pg.py); a session
    runs on one, which is SIGKILLed at a random point of its lease cycle; the time from the kill to the
    adopter's ``interrupted``/``failover`` event (its stored timestamp), to ``running`` again and to its first
    step, against the bound the settings give (lease TTL + one renew tick).
(b) latency: a session making cheap steps (the fake Messages API, real SDK over HTTP, answering at once) on
    one replica; viewers on the stream WebSocket of the holder and of the other replica; per event, the time
    from its stored timestamp to its arrival at the viewer. Reference: one non-cluster replica on SQLite with
    its in-process bus, same session, same viewer.
(c) sessions per host: bench/cluster_host.py.

Every replica runs real local desktops (Xvfb, openbox, Chromium). The viewers live in another process, so
they share no GIL with the fake model; every clock is this machine's wall clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import websockets

from deskpilot.settings import Settings
from tests.support.fake_messages import FakeMessages, Reply, Request, reply, text, tool_use
from tests.web.conftest import make_tokens, wait_for
from tests.web.pg import PgCluster
from tests.web.procs import ServerProcess
from tests.web.test_replicas import replica_dirs
from tests.web.test_restart import get, model_env, post, wait_session

FINAL = ("succeeded", "failed", "cancelled")
# The loop's safety nets would pause a bench that clicks or looks at the same screen for minutes.
QUIET = {"DESKPILOT_WATCHDOG_REPEAT_LIMIT": "0", "DESKPILOT_WATCHDOG_NO_CHANGE_LIMIT": "0",
         "DESKPILOT_WATCHDOG_REREAD_LIMIT": "0", "DESKPILOT_WATCHDOG_MAX_TOKENS_PER_MINUTE": "0",
         "DESKPILOT_WATCHDOG_MAX_COST_PER_MINUTE": "0", "DESKPILOT_MAX_COST_USD": "0",
         "DESKPILOT_MAX_STEPS": "1000", "DESKPILOT_RATE_LIMIT_PER_MINUTE": "1000000",
         "DESKPILOT_LOG_FORMAT": "json"}
Responder = Callable[[int, Request], Reply]


class Model:
    """One fake model for the whole bench: each session's task is ``bench-<kind>-<n>``, and the responder
    registered for ``kind`` answers it with the number of replies that session already had."""

    def __init__(self, fake: FakeMessages) -> None:
        self.fake, self.kinds = fake, dict[str, Responder]()

    def on(self, kind: str, responder: Responder, calls: int) -> None:
        self.kinds[kind] = responder
        self.fake.script(*([self._answer] * calls))

    def _answer(self, req: Request) -> Reply:
        first = json.dumps(req.body["messages"][0])
        kind = next((k for k in self.kinds if f"bench-{k}-" in first), None)
        if kind is None:
            raise ValueError("not a bench session")  # the fake answers 400
        answered = sum(1 for m in req.body["messages"] if m["role"] == "assistant")
        return self.kinds[kind](answered, req)


def create(server: ServerProcess, token: str, task: str) -> str:
    r = post(server, token, "/api/sessions", {"task": task, "policy": {"preset": "autonomous"}})
    if r.status_code != 201:
        raise RuntimeError(f"creating a session failed: {r.status_code} {r.text}")
    return str(r.json()["id"])


def end(server: ServerProcess, token: str, sid: str) -> None:
    post(server, token, f"/api/sessions/{sid}/cancel")
    wait_session(server, token, sid, *FINAL, timeout=120)


def epoch(iso: str) -> float:
    at = datetime.fromisoformat(iso)
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def pct(xs: list[float], q: int) -> float:
    """The q-th percentile (inclusive method; the max for q=100)."""
    if len(xs) < 2:
        return xs[0] if xs else float("nan")
    return max(xs) if q >= 100 else statistics.quantiles(xs, n=100, method="inclusive")[q - 1]


# --- viewers, in another process --------------------------------------------------------------------------
def watch_main(urls: list[str], token: str, ready: Any, stop: Any, results: Any) -> None:
    """Each URL's event messages as (seq, type, stored ts, received at, status, reason), until a final status."""

    async def one(url: str, out: list[tuple[Any, ...]], up: asyncio.Event) -> None:
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                      max_size=None, compression=None, open_timeout=60) as ws:
            await ws.recv()  # the hello
            up.set()
            while not stop.is_set():
                try:
                    msg = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                now = time.time()
                if isinstance(msg, bytes):  # a live frame (on the holder only)
                    continue
                body = json.loads(msg)
                if body["kind"] != "event":
                    continue
                data = body["data"] if isinstance(body["data"], dict) else {}
                out.append((body["seq"], body["type"], epoch(body["ts"]), now, data.get("status", ""),
                            data.get("reason", "")))
                if body["type"] == "status" and data.get("status") in FINAL:
                    return

    async def go() -> list[list[tuple[Any, ...]]]:
        outs: list[list[tuple[Any, ...]]] = [[] for _ in urls]
        ups = [asyncio.Event() for _ in urls]
        tasks = [asyncio.create_task(one(u, o, e)) for u, o, e in zip(urls, outs, ups, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ups)), 90)
        ready.set()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, BaseException):
                print(f"viewer failed: {outcome!r}", file=sys.stderr, flush=True)
        return outs

    results.put(asyncio.run(go()))


def watched(servers: list[ServerProcess], token: str, sid: str, start: Callable[[], None],
            timeout: float) -> list[list[tuple[Any, ...]]]:
    """Viewers on each server's stream of the session; ``start()`` once all are attached; their events."""
    ctx = multiprocessing.get_context("spawn")
    ready, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    urls = [f"ws://127.0.0.1:{s.port}/api/sessions/{sid}/stream" for s in servers]
    proc = ctx.Process(target=watch_main, args=(urls, token, ready, stop, results), daemon=True)
    proc.start()
    try:
        if not ready.wait(120):
            raise RuntimeError("the viewers did not attach within 120 s")
        start()
        got: list[list[tuple[Any, ...]]] = results.get(True, timeout)
        return got
    finally:
        stop.set()
        proc.join(30)
        if proc.is_alive():
            proc.kill()


# --- (b) event latency ------------------------------------------------------------------------------------
def stepper(steps: int, go: threading.Event) -> Responder:
    def answer(done: int, _req: Request) -> Reply:
        if done == 0:
            go.wait(180)  # the measured steps start once every viewer is attached
        if done >= steps:
            return reply(text("done"))
        return reply(text(f"step {done}"), tool_use("computer", {"action": "screenshot"}))

    return answer


def latency_run(model: Model, holder: ServerProcess, viewers: list[ServerProcess], token: str, steps: int,
                tag: str) -> list[dict[str, Any]]:
    """Per viewer: latencies (s) of the events stored after the steps began, and the seqs it received."""
    go = threading.Event()
    model.on(tag, stepper(steps, go), steps + 4)
    sid = create(holder, token, f"bench-{tag}-1")
    began = [0.0]

    def start() -> None:
        began[0] = time.time()
        go.set()

    got = watched(viewers, token, sid, start, timeout=60 + steps * 5)
    wait_session(holder, token, sid, *FINAL, timeout=120)
    stored = [e["seq"] for e in get(holder, token, f"/api/sessions/{sid}/events", limit=1000)["items"]]
    out = []
    for rows in got:
        seqs = [r[0] for r in rows]
        out.append({"lat": [r[3] - r[2] for r in rows if r[2] >= began[0]], "seqs": seqs,
                    "missing": len(set(stored) - set(seqs)), "twice": len(seqs) - len(set(seqs))})
    return out


def latency_table(rows: list[tuple[str, dict[str, Any]]]) -> None:
    ref = statistics.median(rows[-1][1]["lat"]) if rows[-1][1]["lat"] else float("nan")
    print(f"\n(b) event stored on the holder -> received on a viewer's stream WebSocket\n"
          f"{'viewer':<46} {'events':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'p50 vs ref':>10} "
          f"{'lost':>4} {'twice':>5}")
    for name, r in rows:
        ms = [x * 1000 for x in r["lat"]]
        p50 = statistics.median(ms) if ms else float("nan")
        print(f"{name:<46} {len(ms):>6} {p50:>7.1f} {pct(ms, 99):>7.1f} {pct(ms, 100):>7.1f} "
              f"{p50 / (ref * 1000):>9.2f}x {r['missing']:>4} {r['twice']:>5}")


# --- (a) failover -----------------------------------------------------------------------------------------
def looper(done: int, _req: Request) -> Reply:
    """A session that keeps stepping (one look every ~0.5 s) until it is cancelled."""
    return reply(text(f"look {done}"), tool_use("computer", {"action": "screenshot"}), delay_s=0.5)


def failover_trial(replicas: list[ServerProcess], envs: list[dict[str, str]], token: str, trial: int,
                   renew_s: float) -> dict[str, float]:
    k = trial % 2
    victim, other = replicas[k], replicas[1 - k]
    sid = create(victim, token, f"bench-failover-{trial}")

    def items() -> list[dict[str, Any]]:
        return list(get(other, token, f"/api/sessions/{sid}/events", limit=1000)["items"])

    wait_for(lambda: any(e["type"] == "tool_result" for e in items()), 180)
    time.sleep(random.uniform(0, renew_s))  # a random point of the lease cycle
    killed = time.time()
    victim.kill()  # SIGKILL; its desktops are stopped after

    def after() -> dict[str, float] | None:
        evs = items()
        fo = next((i for i, e in enumerate(evs) if e["type"] == "status" and e["data"].get("reason") == "failover"),
                  None)
        if fo is None:
            return None
        run = next((e for e in evs[fo:] if e["type"] == "status" and e["data"]["status"] == "running"), None)
        step = next((e for e in evs[fo:] if e["type"] == "tool_result"), None)
        if run is None or step is None:
            return None
        return {"takeover": epoch(evs[fo]["ts"]) - killed, "running": epoch(run["ts"]) - killed,
                "step": epoch(step["ts"]) - killed}

    got: dict[str, float] = wait_for(after, 240, interval=0.2)
    end(other, token, sid)
    replicas[k] = ServerProcess(victim.data_dir, envs[k], port=victim.port).start()
    return got


def failover_table(trials: list[dict[str, float]], ttl: float, renew: float) -> None:
    print(f"\n(a) failover after SIGKILL of the replica running the session ({len(trials)} trials; "
          f"lease TTL {ttl:g} s, renew every {renew:g} s)\n"
          f"{'from the kill to, on the other replica':<46} {'min s':>6} {'p50 s':>6} {'max s':>6}")
    names = {"takeover": "interrupted (reason failover) stored",
             "running": "running again (new desktop up)", "step": "first step done after it"}
    for key, name in names.items():
        xs = [t[key] for t in trials]
        print(f"{name:<46} {min(xs):>6.2f} {statistics.median(xs):>6.2f} {max(xs):>6.2f}")
    each = ", ".join(f"{t['takeover']:.2f}" for t in trials)
    print(f"bound for the takeover: TTL + one tick = {ttl + renew:g} s (earliest TTL - one tick = "
          f"{ttl - renew:g} s: killed just before a renewal, adopted at once); each trial: {each}")


# --- the runs ---------------------------------------------------------------------------------------------
def cluster_part(model: Model, fake: FakeMessages, root: Path, settings: Settings, only: set[str],
                 trials: int, steps: int) -> list[tuple[str, dict[str, Any]]]:
    pg = PgCluster().start()
    try:
        url = pg.create_database()
        dirs = replica_dirs(root / "cluster", 2)
        token = make_tokens(dirs[0], ["bench"], url)["bench"]
        envs = [model_env(fake, DESKPILOT_DATABASE_URL=url, DESKPILOT_CLUSTER="true", DESKPILOT_REPLICA_ID=f"r{i}",
                          DESKPILOT_LEASE_TTL_S=str(settings.lease_ttl_s),
                          DESKPILOT_LEASE_RENEW_S=str(settings.lease_renew_s), **QUIET) for i in (1, 2)]
        replicas = [ServerProcess(d, e) for d, e in zip(dirs, envs, strict=True)]
        try:
            for r in replicas:
                r.start()
            rows = []
            if "latency" in only:
                holder, other = latency_run(model, replicas[0], replicas, token, steps, "latency")
                rows = [("cluster: other replica (PostgreSQL NOTIFY)", other),
                        ("cluster: the holder itself (PostgreSQL NOTIFY)", holder)]
            if "failover" in only:
                model.on("failover", looper, 400 * trials)
                done = []
                for t in range(trials):
                    done.append(failover_trial(replicas, envs, token, t, settings.lease_renew_s))
                    print(json.dumps({"failover_trial": t, **{k: round(v, 3) for k, v in done[-1].items()}}),
                          flush=True)
                failover_table(done, settings.lease_ttl_s, settings.lease_renew_s)
            return rows
        finally:
            for r in replicas:
                r.stop()
    finally:
        pg.stop()


def reference_latency(model: Model, fake: FakeMessages, root: Path, steps: int) -> dict[str, Any]:
    data = root / "single"
    token = make_tokens(data, ["bench"])["bench"]
    server = ServerProcess(data, model_env(fake, **QUIET)).start()
    try:
        return latency_run(model, server, [server], token, steps, "reference")[0]
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="failover,latency,host")
    parser.add_argument("--trials", type=int, default=5, help="failover trials")
    parser.add_argument("--steps", type=int, default=60, help="steps of the latency session")
    parser.add_argument("--levels", default="1,2,4,6,8", help="concurrent sessions on one replica")
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per level")
    parser.add_argument("--host-budget", type=float, default=330.0, help="seconds for the whole host part")
    args = parser.parse_args()
    only = set(args.only.split(","))
    settings = Settings()
    started = time.monotonic()
    print(f"load at start: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="dpcb-") as tmp, FakeMessages() as fake:
        model, root = Model(fake), Path(tmp)
        rows = cluster_part(model, fake, root, settings, only, args.trials, args.steps) \
            if only & {"latency", "failover"} else []
        if "latency" in only:
            rows.append(("single replica, SQLite, in-process bus (ref)", reference_latency(model, fake, root,
                                                                                            args.steps)))
            latency_table(rows)
        if "host" in only:
            from bench.cluster_host import host_part

            host_part(model, fake, root, [int(k) for k in args.levels.split(",")], args.window, args.host_budget)
    print(f"\nwhole run {time.monotonic() - started:.0f} s; load at the end: "
          f"{Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
