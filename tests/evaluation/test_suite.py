"""The built-in suite (evals/) end to end: each task on its own real desktop through the service's runner, the
scripted agents speaking the Messages API. The oracle must score 100 %, doing nothing 0 %, random clicks ~0 %:
the checkers can be satisfied and cannot be fooled."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from deskpilot.cli import main
from deskpilot.settings import Settings
from evaluation.harness import EvalOptions, Harness
from evaluation.tasks import load_suite
from tests.evaluation.oracle import ScriptedAgent
from tests.support.fake_messages import FakeMessages

pytestmark = pytest.mark.desktop  # real desktops (Xvfb, Chromium) through the runner

ROOT = Path(__file__).resolve().parents[2]
EVALS = ROOT / "evals"
SCHEMA = json.loads((ROOT / "docs" / "trajectory.schema.json").read_text())


def run_suite(out: Path, mode: str, pattern: str | None = None, parallel: int = 2) -> tuple[dict[str, Any], int,
                                                                                           list[str]]:
    """``(results, model requests, progress lines)`` of one harness run."""
    suite = load_suite(EVALS, pattern)
    lines: list[str] = []
    with FakeMessages() as fake:
        ScriptedAgent(suite, mode).install(fake, 40 * len(suite.tasks))
        settings = Settings(data_dir=out / "unused", anthropic_api_key="sk-test", anthropic_base_url=fake.url,
                            model="claude-opus-4-5", thinking_budget_tokens=0)
        results = asyncio.run(Harness(settings, suite, out, EvalOptions(parallel=parallel, timeout_s=150),
                                      lines.append).run())
        assert not fake.errors, fake.errors  # an oracle step that could not be resolved
        return results.data, len(fake.requests), lines


def test_the_oracle_solves_every_task_and_a_rerun_resumes(tmp_path: Path) -> None:
    started = time.monotonic()
    data, calls, lines = run_suite(tmp_path / "out", "oracle")
    wall = time.monotonic() - started
    failed = [(r["key"], r["error"], r["checks"]) for r in data["runs"] if not r["success"]]
    assert not failed, failed
    tasks = load_suite(EVALS).tasks
    assert len(tasks) >= 30 and len(data["runs"]) == len(tasks)
    assert data["summary"]["success_rate"] == 1.0 and data["summary"]["ci95"][0] > 0.85
    assert calls == sum(r["steps"] for r in data["runs"])
    print(f"oracle: {len(tasks)} tasks in {wall:.0f} s at parallel 2")  # the CI budget figure
    # Every run left its trajectory; they validate against the schema and carry the score as the last reward.
    for run in data["runs"]:
        bundle = tmp_path / "out" / run["trajectory"]
        steps = [json.loads(line) for line in (bundle / "traj.jsonl").read_text().splitlines()]
        jsonschema.validate({"meta": json.loads((bundle / "meta.json").read_text()), "steps": steps,
                             "messages": json.loads((bundle / "messages.json").read_text())}, SCHEMA)
        assert steps[-1]["done"] is True and steps[-1]["reward"] == 1.0
    # The injected page did not get its way: nothing transferred, the notes hold the model number.
    injection = next(r for r in data["runs"] if r["task_id"] == "injection-notes")
    assert [c["result"] for c in injection["checks"]] == ["MX-500", None]
    # A rerun in the same directory skips every finished run: no desktop, no model call.
    again, calls, lines = run_suite(tmp_path / "out", "oracle")
    assert calls == 0 and lines[0].startswith(f"resuming: {len(tasks)} finished")
    assert again["summary"]["success_rate"] == 1.0


def test_doing_nothing_scores_zero(tmp_path: Path) -> None:
    data, calls, _ = run_suite(tmp_path / "out", "nothing")
    passed = [r["key"] for r in data["runs"] if r["success"]]
    assert passed == [] and calls == len(data["runs"])
    assert all(r["outcome"] == "completed" and r["error"] is None for r in data["runs"]), data["runs"]


def test_random_clicks_score_about_zero(tmp_path: Path) -> None:
    data, _, _ = run_suite(tmp_path / "out", "random")
    passed = [r["key"] for r in data["runs"] if r["success"]]
    assert len(passed) <= 1, passed
    assert all(r["outcome"] == "completed" for r in data["runs"])


def test_the_eval_command_writes_results_and_reports_and_compares(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    suite = load_suite(EVALS, "nav-*")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.setenv("DESKPILOT_MODEL", "claude-opus-4-5")
    monkeypatch.setenv("DESKPILOT_THINKING_BUDGET_TOKENS", "0")
    monkeypatch.setenv("DESKPILOT_DATA_DIR", str(tmp_path / "unused"))
    outs = {}
    for mode in ("oracle", "nothing"):
        with FakeMessages() as fake:
            ScriptedAgent(suite, mode).install(fake, 100)
            monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
            outs[mode] = tmp_path / mode
            result = CliRunner().invoke(main, ["eval", str(EVALS), "--tasks", "nav-*", "--parallel", "2",
                                               "-o", str(outs[mode]), "--fail-under", "1"])
        if mode == "oracle":
            assert result.exit_code == 0, result.output
            assert "success 3/3 = 100.0 %" in result.output
        else:
            assert result.exit_code == 1 and "success 0/3 = 0.0 %" in result.output
    report = (outs["oracle"] / "report.md").read_text()
    assert "**Success rate 100.0 %** (3/3" in report and "| nav-kettle | ✅ completed | 1.00 |" in report
    page = (outs["oracle"] / "report.html").read_text()
    assert 'id="rate"' in page and "trajectories/nav-sku/preview.gif" in page
    assert (outs["oracle"] / "trajectories" / "nav-sku" / "preview.gif").is_file()
    compared = CliRunner().invoke(main, ["eval", "compare", str(outs["oracle"]), str(outs["nothing"])])
    assert compared.exit_code == 0, compared.output
    assert "B − A = -100.0 points" in compared.output and "| nav-sku | 1/1 | 0/1 | worse |" in compared.output
    bad = CliRunner().invoke(main, ["eval", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_a_failed_setup_is_an_error_a_slow_run_times_out_and_a_rerun_repeats_only_errors(tmp_path: Path) -> None:
    suite_dir = tmp_path / "suite"
    (suite_dir / "tasks").mkdir(parents=True)
    check = {"func": "exact_match", "result": {"type": "command", "command": "echo ok"}, "expected": "ok"}
    (suite_dir / "tasks" / "broken.json").write_text(json.dumps({
        "id": "broken", "instruction": "Never starts.", "evaluator": check,
        "config": [{"type": "execute", "parameters": {"command": "echo no >&2; exit 3"}}]}))
    (suite_dir / "tasks" / "slow.json").write_text(json.dumps({
        "id": "slow", "instruction": "Takes too long.", "evaluator": check, "timeout_s": 4,
        "oracle": [{"computer": {"action": "wait", "duration": 3}}] * 5}))
    suite = load_suite(suite_dir)
    out = tmp_path / "out"
    for attempt in (1, 2):
        lines: list[str] = []
        with FakeMessages() as fake:
            ScriptedAgent(suite, "oracle").install(fake, 20)
            settings = Settings(data_dir=out / "unused", anthropic_api_key="sk-test", anthropic_base_url=fake.url,
                                model="claude-opus-4-5", thinking_budget_tokens=0)
            data = asyncio.run(Harness(settings, suite, out, EvalOptions(parallel=2), lines.append).run()).data
        runs = {r["key"]: r for r in data["runs"]}
        assert runs["broken"]["outcome"] == "error" and runs["broken"]["score"] == 0.0
        assert "setup command failed: exit code 3: no" in runs["broken"]["error"]
        assert runs["slow"]["outcome"] == "timeout" and runs["slow"]["status"] == "cancelled"
        assert runs["slow"]["score"] == 1.0, runs["slow"]  # the final state is still scored (any desktop passes)
        if attempt == 2:
            assert lines[0] == "resuming: 1 finished run(s) kept, 1 to go"


@pytest.mark.parametrize(("mode", "reason"), [("stuck", "stuck_repeat"), ("staring", "rereading"),
                                              ("fidgeting", "no_progress")])
def test_an_agent_that_gets_nowhere_is_paused_and_the_result_says_why(tmp_path: Path, mode: str,
                                                                       reason: str) -> None:
    data, calls, _ = run_suite(tmp_path / "out", mode, "nav-kettle", parallel=1)
    (run,) = data["runs"]
    assert run["outcome"] == "stuck" and run["status"] == "cancelled" and not run["success"], run
    assert run["watchdog"]["reason"] == reason and run["error"].startswith(f"paused by the watchdog ({reason})")
    assert calls < 20  # paused long before the agent's 40 calls
