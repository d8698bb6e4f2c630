"""``deskpilot eval SUITE [options]`` and ``deskpilot eval compare A B``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from deskpilot.errors import DeskpilotError


class _DefaultRun(click.Group):
    """``deskpilot eval SUITE …`` means ``deskpilot eval run SUITE …``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group("eval", cls=_DefaultRun)
def eval_command() -> None:
    """Run a task suite and score it: deskpilot eval SUITE [options]; deskpilot eval compare A B."""


@eval_command.command("run")
@click.argument("suite", type=click.Path(exists=True, path_type=Path))
@click.option("--model", default=None, help="Model for every task (default: DESKPILOT_MODEL).")
@click.option("--parallel", type=click.IntRange(1, 64), default=1, show_default=True, help="Desktops at once.")
@click.option("--backend", type=click.Choice(["local", "docker"]), default="local", show_default=True)
@click.option("--repeat", type=click.IntRange(1, 100), default=1, show_default=True, help="Runs per task.")
@click.option("--tasks", "pattern", default=None, help="Only task ids matching this glob (several: comma-separated).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Results directory (default eval-results/SUITE); a rerun there skips finished runs.")
@click.option("--timeout", type=click.FloatRange(1, 86_400), default=300.0, show_default=True,
              help="Seconds per task unless the task sets timeout_s.")
@click.option("--max-steps", type=click.IntRange(1, 1000), default=30, show_default=True,
              help="Model calls per task unless the task sets max_steps.")
@click.option("--max-cost", type=click.FloatRange(0, 10_000, min_open=True), default=None, help="USD per task.")
@click.option("--policy", "preset", type=click.Choice(["autonomous", "cautious", "strict"]), default="autonomous",
              show_default=True, help="Approval policy preset.")
@click.option("--on-ask", type=click.Choice(["approve", "reject"]), default="reject", show_default=True,
              help="What answers an action the policy asks about (never a person).")
@click.option("--fail-under", type=click.FloatRange(0, 1), default=None, help="Exit 1 below this success rate.")
def run_command(suite: Path, model: str | None, parallel: int, backend: str, repeat: int, pattern: str | None,
                output: Path | None, timeout: float, max_steps: int, max_cost: float | None, preset: str,
                on_ask: str, fail_under: float | None) -> None:
    """Run every task of SUITE (a directory of task JSON files, or one file), each on a fresh desktop."""
    from deskpilot.settings import Settings
    from evaluation.harness import EvalOptions, Harness
    from evaluation.report import write_reports
    from evaluation.tasks import load_suite

    try:
        loaded = load_suite(suite, pattern)
    except DeskpilotError as exc:
        raise click.ClickException(exc.message) from None
    out = output or Path("eval-results") / loaded.name
    options = EvalOptions(model=model, parallel=parallel, repeat=repeat, backend=backend,  # type: ignore[arg-type]
                          timeout_s=timeout, max_steps=max_steps, max_cost_usd=max_cost,
                          policy={"preset": preset}, on_ask=on_ask)  # type: ignore[arg-type]
    click.echo(f"eval: {len(loaded.tasks)} task(s) × {repeat} from {suite} → {out}", err=True)

    def progress(line: str) -> None:
        click.echo(line, err=True)

    try:
        results = asyncio.run(Harness(Settings(), loaded, out, options, progress).run())
    except DeskpilotError as exc:
        raise click.ClickException(exc.message) from None
    write_reports(out, results.data)
    s: dict[str, Any] = results.data["summary"]
    click.echo(f"success {s['successes']}/{s['runs']} = {100 * s['success_rate']:.1f} % (95 % CI "
               f"{100 * s['ci95'][0]:.1f}–{100 * s['ci95'][1]:.1f} %); report: {out / 'report.html'}")
    if fail_under is not None and s["success_rate"] < fail_under:
        sys.exit(1)


@eval_command.command("compare")
@click.argument("a", type=click.Path(exists=True, path_type=Path))
@click.argument("b", type=click.Path(exists=True, path_type=Path))
def compare_command(a: Path, b: Path) -> None:
    """Two result sets (directories or results.json) side by side, with the difference's interval."""
    from evaluation.report import compare, load_results

    try:
        click.echo(compare(load_results(a), load_results(b)), nl=False)
    except DeskpilotError as exc:
        raise click.ClickException(exc.message) from None
