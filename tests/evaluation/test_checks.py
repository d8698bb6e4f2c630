"""Task parsing, metrics and the report's statistics: pure functions, no desktop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deskpilot.errors import ConfigError
from evaluation.evaluate import declared_infeasible
from evaluation.metrics import score
from evaluation.report import compare, markdown, newcombe, summary, wilson
from evaluation.tasks import fill, load_suite, parse_task

GOOD: dict[str, Any] = {"id": "t1", "instruction": "Do it at {pages}/x.html",
                        "config": [{"type": "open_url", "parameters": {"url": "{pages}/x.html"}}],
                        "evaluator": {"func": "exact_match", "result": {"type": "active_title"}, "expected": "X"}}


def test_a_task_parses_and_an_osworld_style_list_evaluator_too() -> None:
    task = parse_task(GOOD)
    assert task.id == "t1" and task.checks[0].func == "exact_match" and task.conj == "and" and not task.infeasible
    multi = parse_task({**GOOD, "evaluator": {"func": ["contains", "numeric"], "conj": "or",
                                              "result": [{"type": "agent_answer"}, {"type": "file", "path": "/f"}],
                                              "expected": [{"type": "rule", "rules": "a"}, 3],
                                              "options": [{}, {"abs_tol": 0.5}]}})
    assert [c.func for c in multi.checks] == ["contains", "numeric"] and multi.conj == "or"
    assert multi.checks[1].options == {"abs_tol": 0.5}
    assert parse_task({**GOOD, "evaluator": {"func": "infeasible"}}).infeasible
    assert parse_task({**GOOD, "config": [{"type": "screen", "parameters": {"width": 1280, "height": 800}}]}).screen \
        == (1280, 800)


@pytest.mark.parametrize(("change", "message"), [
    ({"id": "../etc"}, "'id'"),
    ({"instruction": " "}, "'instruction'"),
    ({"config": [{"type": "format_disk"}]}, "'config'"),
    ({"config": [{"type": "screen", "parameters": {"width": 10, "height": 10}}]}, "screen"),
    ({"evaluator": {"result": {"type": "x"}}}, "'func'"),
    ({"evaluator": {"func": "exact_match", "result": "title"}}, "getter object"),
    ({"evaluator": {"func": ["exact_match", "contains"], "result": [{"type": "a"}], "expected": [1, 2]}}, "as long"),
    ({"evaluator": {**GOOD["evaluator"], "conj": "xor"}}, "'conj'"),
    ({"max_steps": 0}, "'max_steps'"),
    ({"oracle": "click"}, "'oracle'"),
])
def test_bad_tasks_are_refused_with_the_field_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_task({**GOOD, **change}, Path("suite/t1.json"))


def test_a_suite_loads_filters_and_refuses_duplicates_and_bad_json(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.json").write_text(json.dumps(GOOD))
    (tmp_path / "tasks" / "b.json").write_text(json.dumps({**GOOD, "id": "other"}))
    assert [t.id for t in load_suite(tmp_path).tasks] == ["t1", "other"]
    assert [t.id for t in load_suite(tmp_path, "oth*").tasks] == ["other"]
    assert [t.id for t in load_suite(tmp_path, "oth*, t1").tasks] == ["t1", "other"]  # several globs
    with pytest.raises(ConfigError, match="no tasks"):
        load_suite(tmp_path, "zzz*")
    (tmp_path / "tasks" / "c.json").write_text(json.dumps(GOOD))
    with pytest.raises(ConfigError, match="appears twice"):
        load_suite(tmp_path)
    (tmp_path / "tasks" / "c.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        load_suite(tmp_path)
    assert fill({"u": ["{pages}/a", 3]}, {"pages": "http://h"}) == {"u": ["http://h/a", 3]}


@pytest.mark.parametrize(("func", "result", "expected", "options", "want"), [
    ("exact_match", " Walnut Desk\n", "Walnut Desk", {}, 1.0),
    ("exact_match", "walnut desk", "Walnut Desk", {}, 0.0),
    ("exact_match", "walnut desk", "Walnut Desk", {"ignore_case": True}, 1.0),
    ("exact_match", 3, 3, {}, 1.0),
    ("exact_match", None, None, {}, 1.0),
    ("exact_match", None, "x", {}, 0.0),
    ("contains", "the code is K7", "K7", {}, 1.0),
    ("contains", [{"url": "http://a/terms.html"}], "terms.html", {}, 1.0),
    ("contains", "abc", ["a", "z"], {}, 0.0),
    ("not_contains", "all fine", ["HACKED"], {}, 1.0),
    ("not_contains", "you were hacked", "HACKED", {}, 0.0),
    ("regex_match", "http://h/shop/kettle.html", r"/kettle\.html$", {}, 1.0),
    ("regex_match", "4\n", r"\s*4\s*", {"full": True}, 1.0),
    ("regex_match", None, "x", {}, 0.0),
    ("numeric", "Total: 1,234.00 EUR", 1234, {}, 1.0),
    ("numeric", "34.9", 34.90, {"abs_tol": 0.01}, 1.0),
    ("numeric", "35", 34.90, {"abs_tol": 0.01}, 0.0),
    ("numeric", "no number", 1, {}, 0.0),
    ("numeric", True, 1, {}, 0.0),
    ("json_subset", '{"a": 1, "b": {"c": [1, 2]}, "d": 0}', {"b": {"c": [1, 2]}}, {}, 1.0),
    ("json_subset", {"a": [1, 2, 3]}, {"a": [1, 2]}, {}, 0.0),
    ("json_subset", "not json", {"a": 1}, {}, 0.0),
    ("json_subset", {"a": 1}, {"type": "rule", "rules": {"a": 1}}, {}, 1.0),
    ("file_exists", "", True, {}, 1.0),
    ("file_exists", None, True, {}, 0.0),
    ("file_exists", None, False, {}, 1.0),
    ("file_equals", "a\n", "a\n", {}, 1.0),
    ("file_equals", "a", "a\n", {}, 0.0),
    ("python:tests.evaluation.checkers:half", "anything", None, {}, 0.5),
    ("python:tests.evaluation.checkers.half", "anything", None, {}, 0.5),
])
def test_metrics(func: str, result: Any, expected: Any, options: dict[str, Any], want: float) -> None:
    assert score(func, result, expected, options) == want


@pytest.mark.parametrize(("func", "options", "message"), [
    ("no_such_metric", {}, "unknown metric"),
    ("python:tests.evaluation.nope:f", {}, "not found"),
    ("exact_match", {"fuzzy": True}, "bad options"),
    ("regex_match", {}, "bad pattern"),
])
def test_a_bad_metric_is_a_clear_error(func: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        score(func, "x", "(" if func == "regex_match" else "x", options)


def test_infeasible_is_declared_by_the_word_alone() -> None:
    assert declared_infeasible("INFEASIBLE: there is no Klingon")
    assert not declared_infeasible("That was not infeasible at all") and not declared_infeasible(None)


def test_intervals() -> None:
    low, high = wilson(30, 30)
    assert high == 1.0 and 0.88 < low < 0.89  # 30/30 still leaves room below 100 %
    low, high = wilson(0, 30)
    assert low == 0.0 and 0.11 < high < 0.12
    assert wilson(0, 0) == (0.0, 1.0)
    d, lo, hi = newcombe(15, 30, 25, 30)
    assert d == pytest.approx(1 / 3) and 0.09 < lo < d < hi < 0.53


def _run(task: str, ok: bool, k: int = 1) -> dict[str, Any]:
    return {"key": task if k == 1 else f"{task}~{k}", "task_id": task, "success": ok, "score": float(ok),
            "outcome": "completed", "steps": 3, "input_tokens": 10, "output_tokens": 2, "cost_usd": 0.01,
            "wall_s": 1.5, "trajectory": f"trajectories/{task}"}


def test_summary_markdown_and_compare() -> None:
    a = {"suite": "s", "options": {"model": "m1"}, "runs": [_run("x", True), _run("y", False)]}
    b = {"suite": "s", "options": {"model": "m2"}, "runs": [_run("x", True), _run("y", True), _run("y", True, 2)]}
    s = summary(a["runs"])
    assert s["successes"] == 1 and s["success_rate"] == 0.5 and s["outcomes"] == {"completed": 2}
    md = markdown(a)
    assert "**Success rate 50.0 %** (1/2" in md and "| y | ❌ completed | 0.00 |" in md
    assert "[bundle](trajectories/x)" in md
    text = compare(a, b)
    assert "B − A = +50.0 points" in text and "| y | 0/1 | 2/2 | better |" in text and "| x | 1/1 | 1/1 |  |" in text
