"""Run a task suite through the service's own session runner and score every run.

Each run is a session of ``web.runner.Runner`` — the same queue, desktops, loop, policy, budgets, retries and
settle users get — in a store under ``OUT/data`` (so ``deskpilot serve`` on it replays every run). The
harness wraps the desktop backend: when the runner acquires a desktop the task's setup runs on it before the
agent starts; when the runner releases it, the task's checks read it first (out of the agent's reach, it has
finished). Approvals: the policy decides; an action it asks about is decided by ``on_ask``, never a person.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.approvals import Decision
from deskpilot.errors import ConfigError, Conflict, DeskpilotError
from deskpilot.settings import Settings
from desktop.backends.base import DesktopBackend, DesktopHandle
from evaluation import probe
from evaluation.evaluate import INSTRUCTION_SUFFIX, Verdict, evaluate
from evaluation.pages import PageServer
from evaluation.report import Results, run_key
from evaluation.tasks import Suite, Task, fill
from web.bus import Bus
from web.desktops import make_backend
from web.runner import Runner
from web.states import FINAL_STATES
from web.store import Store
from web.trajectory import all_events, build_bundle, write_dir

OWNER = "eval"
POLL_S = 0.2
# On the desktop, straight under /tmp: the desktop's programs run as a fresh uid each (desktop/sandbox.py), so
# a shared parent made by another desktop would not be theirs to write in. Each run adds a random part.
WORKDIRS = "/tmp/deskpilot-eval"  # noqa: S108
EVAL_TIMEOUT_S = 120.0
START_CAP_S = 300.0  # a desktop (and its setup) that takes longer than this counts as an error


@dataclass
class EvalOptions:
    model: str | None = None
    parallel: int = 1
    repeat: int = 1
    backend: Literal["local", "docker"] = "local"
    timeout_s: float = 300.0
    max_steps: int = 30
    max_cost_usd: float | None = None
    policy: dict[str, Any] = field(default_factory=lambda: {"preset": "autonomous"})
    on_ask: Literal["approve", "reject"] = "reject"
    export: bool = True


@dataclass
class Job:
    task: Task
    repeat: int
    session_id: str
    verdict: asyncio.Future[Verdict]
    names: dict[str, str]
    acquired: bool = False
    ready_at: float | None = None  # monotonic time the setup finished: the task's own clock starts
    setup_error: str | None = None
    watchdog: dict[str, Any] | None = None  # the trip that paused the run (agent/watchdog.py), if one did
    released: asyncio.Event = field(default_factory=asyncio.Event)  # its desktop is gone


class EvalBackend:
    """The runner's desktop backend with the task's setup after acquire and its checks before release."""

    def __init__(self, inner: DesktopBackend, harness: Harness) -> None:
        self.inner, self.harness = inner, harness

    async def start(self) -> None:
        await self.inner.start()

    async def acquire(self, session_id: str, width: int, height: int) -> DesktopHandle:
        handle: DesktopHandle = await self.inner.acquire(session_id, width, height)
        if self.harness.wrap_client is not None:  # a benchmark's stand-in for another loop's desktop calls
            handle.client = self.harness.wrap_client(handle.client)
        try:
            await self.harness.prepare(session_id, handle)
        except BaseException:
            await self.inner.release(handle)
            raise
        return handle

    async def release(self, handle: DesktopHandle) -> None:
        try:
            await self.harness.finish(handle)
        finally:
            try:
                await self.inner.release(handle)
            finally:
                self.harness.released(handle)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Harness:
    def __init__(self, settings: Settings, suite: Suite, out_dir: Path, options: EvalOptions,
                 progress: Callable[[str], None] = print, wrap_client: Callable[[Any], Any] | None = None) -> None:
        self.suite, self.out_dir, self.options, self.progress = suite, out_dir, options, progress
        self.wrap_client = wrap_client
        self.settings = settings.model_copy(update={
            "data_dir": out_dir / "data", "database_url": None, "max_sessions": options.parallel,
            "desktop_backend": options.backend, "browser_start_url": "about:blank"})
        self.store = Store(self.settings.data_dir, None)
        self.runner = Runner(self.settings, self.store, Bus(self.settings.viewer_queue_size),
                             backend=EvalBackend(make_backend(self.settings), self))
        self.names: dict[str, str] = {}
        self._jobs: dict[str, asyncio.Future[Job]] = {}
        self.results = Results.load(out_dir / "results.json", suite.name)

    # --- backend hooks ---
    def _job_future(self, session_id: str) -> asyncio.Future[Job]:
        return self._jobs.setdefault(session_id, asyncio.get_running_loop().create_future())

    async def prepare(self, session_id: str, handle: DesktopHandle) -> None:
        job = await asyncio.wait_for(asyncio.shield(self._job_future(session_id)), 60)
        job.acquired = True
        try:
            await probe.setup(handle.client, {"type": "execute",
                                              "parameters": {"command": f"mkdir -p {job.names['workdir']}"}})
            for step in job.task.config:
                await probe.setup(handle.client, fill(step, job.names))
            job.ready_at = time.monotonic()
        except DeskpilotError as exc:
            job.acquired, job.setup_error = False, f"setup: {exc.message}"
            raise
        except TimeoutError:
            job.acquired, job.setup_error = False, "setup: timed out"
            raise

    async def finish(self, handle: DesktopHandle) -> None:
        future = self._jobs.get(handle.session_id)
        if future is None or not future.done():
            return
        job = future.result()
        row = await self.store.get_session(job.session_id)
        try:
            verdict = await asyncio.wait_for(evaluate(job.task, handle.client, row.result, job.names),
                                             EVAL_TIMEOUT_S)
        except Exception as exc:  # whatever went wrong, the run gets a verdict (0) and the suite goes on
            verdict = Verdict(0.0, error=f"evaluation: {getattr(exc, 'message', None) or type(exc).__name__}")
        if not job.verdict.done():
            job.verdict.set_result(verdict)

    def released(self, handle: DesktopHandle) -> None:
        future = self._jobs.get(handle.session_id)
        if future is not None and future.done():
            future.result().released.set()

    # --- running ---
    async def run(self) -> Results:
        reason = self.runner.unavailable(self.options.model)
        if reason:
            raise ConfigError(reason)
        pages = self.suite.pages
        server = PageServer(pages).start() if pages is not None else None
        if server is not None:
            self.names["pages"] = server.url
        try:
            await self.store.init()
            await self.runner.start()
            todo = [(t, k) for t in self.suite.tasks for k in range(1, self.options.repeat + 1)
                    if not self.results.finished(run_key(t.id, k))]
            skipped = len(self.suite.tasks) * self.options.repeat - len(todo)
            if skipped:
                self.progress(f"resuming: {skipped} finished run(s) kept, {len(todo)} to go")
            self.results.start(self.options, self.settings.model)
            gate = asyncio.Semaphore(self.options.parallel)
            done = 0

            async def one(task: Task, k: int) -> None:
                nonlocal done
                async with gate:
                    record = await self._run_one(task, k)
                self.results.add(record)
                self.results.save(self.out_dir / "results.json")
                done += 1
                mark = "PASS" if record["success"] else "FAIL"
                self.progress(f"[{done}/{len(todo)}] {mark} {record['key']}  score {record['score']:.2f}  "
                              f"{record['outcome']}  {record['steps']} steps  {record['wall_s']:.1f} s"
                              + (f"  ({record['error']})" if record.get("error") else ""))

            await asyncio.gather(*(one(t, k) for t, k in todo))
            self.results.finish()
            self.results.save(self.out_dir / "results.json")
            return self.results
        finally:
            await self.runner.stop()
            await self.store.close()
            if server is not None:
                server.close()

    async def _run_one(self, task: Task, k: int) -> dict[str, Any]:
        screen = task.screen
        # A scratch directory per run: local desktops share the host's /tmp, and runs go in parallel.
        names = {**self.names, "workdir": f"{WORKDIRS}-{task.id}-{uuid.uuid4().hex[:8]}"}
        started = time.monotonic()
        row = await self.runner.create(
            OWNER, fill(task.instruction, names) + INSTRUCTION_SUFFIX, model=self.options.model,
            policy=self.options.policy, max_steps=task.max_steps or self.options.max_steps,
            max_cost_usd=self.options.max_cost_usd, screen=screen)
        job = Job(task, k, row.id, asyncio.get_running_loop().create_future(), names)
        self._job_future(row.id).set_result(job)
        outcome = await self._wait(job, task.timeout_s or self.options.timeout_s)
        verdict = await self._verdict(job)
        agent_s = round(time.monotonic() - job.ready_at, 2) if job.ready_at is not None else None
        row = await self.store.get_session(row.id)
        error = job.setup_error or verdict.error or (row.error if row.status != "succeeded" else None)
        if job.watchdog is not None:  # the run paused itself: say why, not "cancelled"
            error = f"paused by the watchdog ({job.watchdog.get('reason')}): {job.watchdog.get('message')}"
        if outcome == "completed" and not job.acquired:
            outcome = "error"
        score = verdict.score if outcome != "error" else 0.0
        record: dict[str, Any] = {
            "key": run_key(task.id, k), "task_id": task.id, "repeat": k, "session_id": row.id,
            "status": row.status, "outcome": outcome, "score": score, "success": score >= 1.0,
            "steps": int((row.usage_totals or {}).get("steps", 0)), "input_tokens": row.input_tokens,
            "output_tokens": row.output_tokens, "cost_usd": round(row.cost_usd, 6),
            "wall_s": round(time.monotonic() - started, 2), "agent_s": agent_s, "answer": row.result, "error": error,
            "checks": verdict.checks, "tags": list(task.tags), "watchdog": job.watchdog, "trajectory": None,
        }
        if self.options.export:
            record["trajectory"] = await self._export(row.id, record["key"], score)
        return record

    async def _wait(self, job: Job, timeout_s: float) -> str:
        """Until the run ends; ``timeout_s`` counts from the end of the setup (a slow desktop start is not the
        agent's time), the start itself is capped at ``START_CAP_S``."""
        session_id, start_by = job.session_id, time.monotonic() + START_CAP_S
        while True:
            row = await self.store.get_session(session_id)
            if row.status in FINAL_STATES:
                return "completed"
            if row.status in ("paused", "interrupted"):  # the watchdog, or retries ran out; nobody would resume
                job.watchdog = await self._watchdog_trip(session_id) if row.status == "paused" else None
                await self._cancel(session_id)
                return "stuck" if job.watchdog is not None else "error"
            if row.status == "awaiting_approval":
                pending = await self.store.pending_approval(session_id)
                if pending is not None:
                    with contextlib.suppress(Conflict):
                        await self.runner.decide(row, pending.id, Decision(
                            self.options.on_ask, "decided by the evaluation's policy"))
            deadline = start_by if job.ready_at is None else job.ready_at + timeout_s
            if time.monotonic() > deadline:
                await self._cancel(session_id)
                return "timeout" if job.ready_at is not None else "error"
            await asyncio.sleep(POLL_S)

    async def _watchdog_trip(self, session_id: str) -> dict[str, Any] | None:
        """The watchdog's trip that paused the run (its reason, message, count and limit), if it was one."""
        events = await all_events(self.store, session_id)
        trip = next((e.data for e in reversed(events) if e.type == "watchdog"), None)
        return dict(trip) if isinstance(trip, dict) else None

    async def _cancel(self, session_id: str) -> None:
        with contextlib.suppress(Conflict):
            await self.runner.cancel(await self.store.get_session(session_id))

    async def _verdict(self, job: Job) -> Verdict:
        """The checks' verdict once the runner released the desktop; none if the desktop never came up."""
        while not job.verdict.done():
            if not job.acquired and job.session_id not in self.runner.live:
                return Verdict(0.0, error=job.setup_error or "the desktop did not start")
            await asyncio.sleep(POLL_S)
        await job.released.wait()  # the desktop is stopped before the run counts as done
        return job.verdict.result()

    async def _export(self, session_id: str, key: str, reward: float) -> str | None:
        target = self.out_dir / "trajectories" / key
        try:
            files = await build_bundle(self.store, session_id, reward=reward)
        except DeskpilotError:
            return None
        await asyncio.to_thread(write_dir, files, target)
        return str(target.relative_to(self.out_dir))
