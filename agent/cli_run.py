"""``deskpilot run "TASK"``: one task on a local desktop, progress on stderr, the answer on stdout.

``--model`` takes any provider's model string (``openai/…``, ``gemini/…``, ``openai-compatible/…`` with
``--base-url`` or DESKPILOT_OPENAI_COMPAT_BASE_URL). A question from the model is asked at the prompt (or,
without a terminal, ends the run with the question printed).

Exit codes: 0 succeeded; 1 failed (reason printed); 2 usage/config error (e.g. no API key);
3 the model stayed unavailable after every retry; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from agent.approvals import Decision
from agent.events import Event
from agent.policy import PRESETS, ApprovalPolicy
from agent.prompts import DesktopFacts
from agent.watchdog import TRIP_REASONS
from deskpilot.cli import cli_settings
from deskpilot.errors import ConfigError, DeskpilotError
from deskpilot.settings import Settings

if TYPE_CHECKING:  # the loop and the model clients import the providers' SDKs: only when a run starts
    from agent.loop import AgentLoop, RunResult
    from agent.providers.client import ModelClient

EXIT_FAILED, EXIT_CONFIG, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 1, 2, 3, 130


def _say(line: str) -> None:
    click.echo(line, err=True)


def _short(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Terminal:
    """Prints events as progress lines and asks approvals at the prompt."""

    def __init__(self, interactive: bool, auto_approve: bool) -> None:
        self.interactive, self.auto_approve = interactive, auto_approve
        self.loop: AgentLoop | None = None
        self.unavailable = ""
        self.question = ""
        self.stuck = ""  # the watchdog's reason, when the run stopped on it

    async def __call__(self, event: Event) -> None:
        d = event.data
        step = f"step {d.get('step', '?')}"
        if event.type == "thinking" and d.get("text"):
            _say(f"{step} · thinking: {_short(d['text'])}")
        elif event.type == "assistant_text":
            _say(f"{step} · says: {_short(d['text'], 200)}")
        elif event.type == "tool_call":
            _say(f"{step} · {d['tool']} {_short(d['input'])}")
        elif event.type == "tool_result":
            took = d.get("meta", {}).get("total_ms")
            _say(f"{step} ·   → {'error: ' + _short(d['error']) if d['is_error'] else 'ok'}"
                 + (f" ({took} ms)" if took is not None else ""))
        elif event.type == "usage":
            t = d["total"]
            _say(f"{step} · tokens in {d['input_tokens']:,} (cache read {d['cache_read_tokens']:,}, "
                 f"write {d['cache_write_tokens']:,}) out {d['output_tokens']:,} · ${d['cost_usd']:.4f} "
                 f"(total ${t['cost_usd']:.4f}, {t['steps']} calls)")
        elif event.type == "retrying":
            _say(f"retrying in {d['delay_s']:.1f}s ({d['reason']}), attempt {d['attempt']}/{d['max_attempts']}")
        elif event.type == "error":
            _say(f"error: {d['message']}")
        elif event.type == "approval_requested":
            await self._approve(d)
        elif event.type == "status" and d["status"] == "paused" and d["reason"] == "model_unavailable":
            self.unavailable = d.get("message") or "the model is unavailable"
            if self.loop is not None:
                self.loop.cancel()  # a terminal run does not wait: say so and exit
        elif event.type == "status" and d["status"] == "paused" and d["reason"] == "question":
            await self._answer()
        elif event.type == "status" and d["status"] == "paused" and d["reason"] in TRIP_REASONS:
            await self._unstick(d.get("message") or d["reason"])

    async def _unstick(self, why: str) -> None:
        """The watchdog paused the run: a hint goes on with it, an empty answer resumes, ``q`` stops."""
        assert self.loop is not None
        _say(f"paused by the watchdog: {why}")
        if not self.interactive:
            self.stuck = why
            _say("  (stdin is not a terminal: stopping here)")
            self.loop.cancel()
            return
        hint = await asyncio.to_thread(click.prompt, "  a hint for the agent (empty: go on, q: stop)", default="",
                                       show_default=False, err=True)
        if hint.strip().lower() == "q":
            self.stuck = why
            self.loop.cancel()
        elif hint.strip():
            self.loop.add_user_message(hint)
        else:
            self.loop.resume()

    async def _answer(self) -> None:
        assert self.loop is not None
        if not self.interactive:
            self.question = "the model asked a question and no one is at the terminal to answer it"
            _say("  (stdin is not a terminal: stopping here)")
            self.loop.cancel()
            return
        answer = await asyncio.to_thread(click.prompt, "  your answer", err=True)
        self.loop.add_user_message(answer)

    async def _approve(self, d: Mapping[str, Any]) -> None:
        assert self.loop is not None
        _say(f"approval needed: {d['tool']} {_short(d['input'], 300)}\n  why: {d['reason']}")
        for check in d.get("safety_checks") or []:  # a vendor's safety signal: never approved by --yes
            _say(f"  safety check {check['code']}: {check['message']}")
        if self.auto_approve and not d.get("safety_checks"):
            self.loop.decide(d["approval_id"], Decision.approve())
            _say("  approved (--yes)")
            return
        if not self.interactive:
            self.loop.decide(d["approval_id"], Decision.reject("no one at the terminal to approve it"))
            _say("  rejected: stdin is not a terminal (use --yes or --policy autonomous)")
            return
        decision = await asyncio.to_thread(_prompt_decision)
        self.loop.decide(d["approval_id"], decision)


def _prompt_decision() -> Decision:
    while True:
        choice = click.prompt("  [a]pprove, [A]lways allow this, [r]eject, [e]dit input", default="a",
                              show_default=False, err=True).strip()
        if choice in ("a", "A"):
            return Decision.approve(always=choice == "A")
        if choice == "r":
            return Decision.reject(click.prompt("  note for the model", default="", err=True))
        if choice == "e":
            raw = click.prompt("  corrected input (JSON)", err=True)
            try:
                value = json.loads(raw)
            except ValueError as exc:
                _say(f"  not JSON: {exc}")
                continue
            if isinstance(value, dict):
                return Decision.edit(value)
            _say("  the input must be a JSON object")


async def _run(task: str, settings: Settings, client: ModelClient, policy: ApprovalPolicy, term: Terminal,
               start_url: str | None, width: int, height: int) -> RunResult:
    try:
        return await _run_on_desktop(task, settings, client, policy, term, start_url, width, height)
    finally:
        await client.close()


async def _run_on_desktop(task: str, settings: Settings, client: ModelClient, policy: ApprovalPolicy,
                          term: Terminal, start_url: str | None, width: int, height: int) -> RunResult:
    from agent.config import LoopConfig
    from agent.loop import AgentLoop
    from desktop.local import start_local_desktop  # heavy: only when a run really starts

    async with start_local_desktop(width, height, start_url=start_url, settings=settings) as desk:
        info = await desk.client.info()
        default = DesktopFacts()
        facts = DesktopFacts(os=info.os or default.os, browser=info.browser or default.browser,
                             width=info.model_width, height=info.model_height)
        config = LoopConfig.from_settings(settings, facts)
        tools = config.tools.computer if config.provider == "anthropic" else f"{config.provider} native"
        _say(f"desktop {info.display} {info.screen_width}x{info.screen_height} (model {facts.width}x{facts.height}),"
             f" model {config.model}, tools {tools}, policy {policy.preset}")
        loop = AgentLoop(client=client, desktop=desk.client, policy=policy, emit=term, config=config)
        term.loop = loop
        task_future = asyncio.ensure_future(loop.run(task))
        try:
            return await asyncio.shield(task_future)
        except asyncio.CancelledError:  # Ctrl-C: interrupt politely so the history stays valid
            loop.cancel()
            return await task_future


@click.command(name="run")
@click.argument("task")
@click.option("--policy", "preset", type=click.Choice(PRESETS), default=None,
              help="Approval preset (default: DESKPILOT_APPROVAL_POLICY, cautious).")
@click.option("--yes", "auto_approve", is_flag=True, help="Approve every ask without prompting.")
@click.option("--model", default=None, help="provider/model, e.g. openai/computer-use-preview, gemini/…, "
              "openai-compatible/ui-tars-1.5 (default: DESKPILOT_MODEL).")
@click.option("--base-url", default=None, help="Endpoint of the model's API (e.g. a local vLLM at "
              "http://127.0.0.1:8000/v1); default: the provider's setting.")
@click.option("--max-steps", type=int, default=None, help="Stop after this many model calls.")
@click.option("--max-cost", type=float, default=None, help="Stop after spending this many USD.")
@click.option("--start-url", default=None, help="Page the browser opens first.")
@click.option("--width", type=int, default=None, help="Screen width (default: DESKPILOT_SCREEN_WIDTH).")
@click.option("--height", type=int, default=None, help="Screen height (default: DESKPILOT_SCREEN_HEIGHT).")
def run_command(task: str, preset: str | None, auto_approve: bool, model: str | None, base_url: str | None,
                max_steps: int | None, max_cost: float | None, start_url: str | None, width: int | None,
                height: int | None) -> None:
    """Run TASK on a fresh local desktop; print progress, ask approvals here, print the answer."""
    from agent.providers.registry import ModelClients  # here: `deskpilot run --help` needs no SDK

    base = cli_settings()
    updates = {k: v for k, v in {"model": model, "max_steps": max_steps, "max_cost_usd": max_cost}.items()
               if v is not None}
    if base_url and (model or base.model).startswith("openai-compatible/"):
        # The operator's own endpoint: it gets DESKPILOT_OPENAI_COMPAT_API_KEY like the configured one would.
        updates["openai_compat_base_url"], base_url = base_url, None
    settings = base.model_copy(update=updates)
    try:
        client = ModelClients(settings).for_model(settings.model, base_url)
    except ConfigError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(EXIT_CONFIG)
    try:
        policy = ApprovalPolicy(preset or settings.approval_policy)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    term = Terminal(interactive=sys.stdin.isatty(), auto_approve=auto_approve)
    try:
        result = asyncio.run(_run(task, settings, client, policy, term, start_url, width or settings.screen_width,
                                  height or settings.screen_height))
    except KeyboardInterrupt:
        _say("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except ConfigError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(EXIT_CONFIG)
    except DeskpilotError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(EXIT_FAILED)
    if result.text:
        click.echo(result.text)
    if result.status == "succeeded":
        _say(f"done · {result.usage['steps']} model calls · ${result.usage['cost_usd']:.4f}")
        return
    if term.unavailable:
        click.echo(f"Error: {term.unavailable}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    if term.question or term.stuck:
        click.echo(f"Error: {term.question or 'paused by the watchdog: ' + term.stuck}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"Error: run {result.status}: {result.message}", err=True)
    sys.exit(EXIT_INTERRUPTED if result.status == "cancelled" else EXIT_FAILED)
