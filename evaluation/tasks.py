"""Task suites: an OSWorld-compatible subset of its task JSON (``docs/evaluation.md`` has the full format).

A suite is a directory: every ``*.json`` under ``tasks/`` (or the directory itself) is one task, or a
``task.json`` in a sub-directory; an optional ``pages/`` directory is served by the harness on loopback and
named ``{pages}`` in URLs, commands and expected values. A single task file is a suite of one.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deskpilot.errors import ConfigError

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SETUP_TYPES = ("open_url", "chrome_open_tabs", "download_dir", "create_file", "execute", "command", "sleep", "screen")
INFEASIBLE = "infeasible"


@dataclass(frozen=True, slots=True)
class Check:
    """One metric over one getter's result: ``func(result, expected, **options)``."""

    func: str
    result: dict[str, Any] | None
    expected: Any
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    instruction: str
    config: list[dict[str, Any]]
    checks: list[Check]
    conj: str = "and"
    infeasible: bool = False
    oracle: list[dict[str, Any]] = field(default_factory=list)
    max_steps: int | None = None
    timeout_s: float | None = None
    tags: tuple[str, ...] = ()
    path: Path | None = None

    @property
    def screen(self) -> tuple[int, int] | None:
        for step in self.config:
            if step["type"] == "screen":
                params = step.get("parameters", {})
                return int(params["width"]), int(params["height"])
        return None


@dataclass(frozen=True, slots=True)
class Suite:
    name: str
    root: Path
    tasks: list[Task]

    @property
    def pages(self) -> Path | None:
        pages = self.root / "pages"
        return pages if pages.is_dir() else None


def _listify(value: Any, n: int) -> list[Any]:
    return value if isinstance(value, list) else [value] * n


def parse_task(data: Any, path: Path | None = None) -> Task:
    where = f"{path}: " if path else ""

    def bad(message: str) -> ConfigError:
        return ConfigError(f"{where}{message}")

    if not isinstance(data, dict):
        raise bad("a task must be a JSON object")
    task_id, instruction = data.get("id"), data.get("instruction")
    if not isinstance(task_id, str) or not ID_RE.match(task_id):
        raise bad("'id' must be 1-100 letters, digits, '.', '_' or '-'")
    if not isinstance(instruction, str) or not instruction.strip():
        raise bad("'instruction' must be a non-empty string")
    config = data.get("config", [])
    if not isinstance(config, list) or not all(isinstance(s, dict) and s.get("type") in SETUP_TYPES for s in config):
        raise bad(f"'config' must be a list of steps with a 'type' in {', '.join(SETUP_TYPES)}")
    for step in config:
        if not isinstance(step.get("parameters", {}), dict):
            raise bad(f"config step {step['type']}: 'parameters' must be an object")
        if step["type"] == "screen":
            p = step.get("parameters", {})
            if not (isinstance(p.get("width"), int) and isinstance(p.get("height"), int)
                    and 320 <= p["width"] <= 8192 and 240 <= p["height"] <= 8192):
                raise bad("config step screen needs integer width (320-8192) and height (240-8192)")
    evaluator = data.get("evaluator")
    if not isinstance(evaluator, dict) or "func" not in evaluator:
        raise bad("'evaluator' must be an object with 'func'")
    funcs = evaluator["func"] if isinstance(evaluator["func"], list) else [evaluator["func"]]
    if not funcs or not all(isinstance(f, str) and f for f in funcs):
        raise bad("evaluator 'func' must be a name or a list of names")
    infeasible = funcs == [INFEASIBLE]
    n = len(funcs)
    results = _listify(evaluator.get("result"), n)
    expected = _listify(evaluator.get("expected"), n) if isinstance(evaluator.get("func"), list) \
        else [evaluator.get("expected")]
    options = _listify(evaluator.get("options", {}), n)
    if not (len(results) == len(expected) == len(options) == n):
        raise bad("evaluator 'result', 'expected' and 'options' lists must be as long as 'func'")
    checks = []
    for func, result, exp, opts in zip(funcs, results, expected, options, strict=True):
        if func != INFEASIBLE and not (isinstance(result, dict) and isinstance(result.get("type"), str)):
            raise bad(f"evaluator {func}: 'result' must be a getter object with a 'type'")
        if not isinstance(opts, dict):
            raise bad(f"evaluator {func}: 'options' must be an object")
        checks.append(Check(func, result, exp, opts))
    conj = evaluator.get("conj", "and")
    if conj not in ("and", "or"):
        raise bad("evaluator 'conj' must be 'and' or 'or'")
    oracle = data.get("oracle", [])
    if not isinstance(oracle, list) or not all(isinstance(s, dict) for s in oracle):
        raise bad("'oracle' must be a list of steps")
    max_steps, timeout = data.get("max_steps"), data.get("timeout_s")
    if max_steps is not None and not (isinstance(max_steps, int) and 1 <= max_steps <= 1000):
        raise bad("'max_steps' must be an integer 1-1000")
    if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
        raise bad("'timeout_s' must be a positive number")
    return Task(task_id, instruction.strip(), config, checks, conj, infeasible, oracle, max_steps,
                float(timeout) if timeout is not None else None, tuple(map(str, data.get("tags", []))), path)


def _task_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    base = root / "tasks" if (root / "tasks").is_dir() else root
    files = sorted(p for p in base.glob("*.json"))
    files += sorted(p for p in base.glob("*/task.json"))
    return files


def load_suite(path: Path, pattern: str | None = None) -> Suite:
    """Every task of the suite at ``path`` whose id matches the glob ``pattern`` (several: comma-separated);
    ConfigError on bad input."""
    if not path.exists():
        raise ConfigError(f"no task suite at {path}")
    root = path if path.is_dir() else path.parent
    tasks: list[Task] = []
    seen: set[str] = set()
    for file in _task_files(path):
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{file}: not readable JSON: {exc}") from exc
        task = parse_task(data, file)
        if task.id in seen:
            raise ConfigError(f"{file}: task id {task.id!r} appears twice in the suite")
        seen.add(task.id)
        if pattern is None or any(fnmatch.fnmatchcase(task.id, glob.strip()) for glob in pattern.split(",")):
            tasks.append(task)
    if not tasks:
        raise ConfigError(f"no tasks in {path}" + (f" match {pattern!r}" if pattern else ""))
    return Suite(root.resolve().name, root, tasks)


def fill(value: Any, names: dict[str, str]) -> Any:
    """``value`` with ``{pages}`` (and the other ``names``) replaced in every string inside it."""
    if isinstance(value, str):
        for key, text in names.items():
            value = value.replace("{" + key + "}", text)
        return value
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    return value
