"""``results.json`` (one record per run, resumable), its Markdown and static HTML report, and comparisons.

Success rate with a 95 % Wilson interval; the difference of two rates with Newcombe's interval (the
hybrid score method built from the two Wilson intervals), both fine for small suites and rates near 0 or 1.
"""

from __future__ import annotations

import html
import json
import math
import os
import uuid
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deskpilot.errors import ConfigError

Z95 = 1.959964
RESULTS_VERSION = "1.0"


def run_key(task_id: str, repeat: int) -> str:
    return task_id if repeat == 1 else f"{task_id}~{repeat}"


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float, float]:
    """``(difference, low, high)`` of rate 2 − rate 1."""
    p1, p2 = (s1 / n1 if n1 else 0.0), (s2 / n2 if n2 else 0.0)
    l1, u1 = wilson(s1, n1)
    l2, u2 = wilson(s2, n2)
    d = p2 - p1
    low = d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return d, max(-1.0, low), min(1.0, high)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Results:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @classmethod
    def load(cls, path: Path, suite: str) -> Results:
        if not path.is_file():
            return cls({"version": RESULTS_VERSION, "suite": suite, "runs": []})
        data = _read(path, "; move it away to start afresh")
        if data.get("suite") != suite:
            raise ConfigError(f"{path} holds results of suite {data.get('suite')!r}, not {suite!r}; use another -o")
        return cls(data)

    @property
    def runs(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.data["runs"]
        return runs

    def finished(self, key: str) -> bool:
        """A run with an answer is kept on resume; one that errored (no desktop, a crash) runs again."""
        return any(r["key"] == key and r["outcome"] != "error" for r in self.runs)

    def start(self, options: Any, model: str) -> None:
        self.data.setdefault("started_at", _now())
        opts = asdict(options) if is_dataclass(options) and not isinstance(options, type) else dict(options)
        self.data["options"] = {**opts, "model": opts.get("model") or model}

    def add(self, record: dict[str, Any]) -> None:
        self.data["runs"] = [r for r in self.runs if r["key"] != record["key"]] + [record]

    def finish(self) -> None:
        self.data["finished_at"] = _now()
        self.data["summary"] = summary(self.runs)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        os.replace(tmp, path)  # an interrupted run leaves the previous file whole: resume reads it


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(runs)
    wins = sum(1 for r in runs if r["success"])
    low, high = wilson(wins, n)
    return {
        "runs": n, "successes": wins, "success_rate": wins / n if n else 0.0, "ci95": [low, high],
        "mean_score": sum(r["score"] for r in runs) / n if n else 0.0,
        "steps": sum(r["steps"] for r in runs), "input_tokens": sum(r["input_tokens"] for r in runs),
        "output_tokens": sum(r["output_tokens"] for r in runs),
        "cost_usd": round(sum(r["cost_usd"] for r in runs), 6), "wall_s": round(sum(r["wall_s"] for r in runs), 2),
        "outcomes": {o: sum(1 for r in runs if r["outcome"] == o) for o in sorted({r["outcome"] for r in runs})},
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def markdown(data: dict[str, Any]) -> str:
    s = data.get("summary") or summary(data["runs"])
    opts = data.get("options", {})
    lines = [f"# Evaluation: {data['suite']}", "",
             f"Model `{opts.get('model')}`, {s['runs']} runs (parallel {opts.get('parallel')}, "
             f"repeat {opts.get('repeat')}, backend {opts.get('backend')}).", "",
             f"**Success rate {_pct(s['success_rate'])}** ({s['successes']}/{s['runs']}; 95 % CI "
             f"{_pct(s['ci95'][0])} – {_pct(s['ci95'][1])}); mean score {s['mean_score']:.2f}; "
             f"{s['steps']} model calls, {s['input_tokens']:,} input / {s['output_tokens']:,} output tokens, "
             f"${s['cost_usd']:.4f}, {s['wall_s']:.1f} s of task time.", "",
             "| task | outcome | score | steps | tokens in/out | cost | wall | trajectory |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(data["runs"], key=lambda r: r["key"]):
        mark = "✅" if r["success"] else "❌"
        traj = f"[bundle]({r['trajectory']})" if r.get("trajectory") else ""
        lines.append(f"| {r['key']} | {mark} {r['outcome']} | {r['score']:.2f} | {r['steps']} | "
                     f"{r['input_tokens']:,}/{r['output_tokens']:,} | ${r['cost_usd']:.4f} | {r['wall_s']:.1f} s | "
                     f"{traj} |")
    return "\n".join(lines) + "\n"


def html_report(data: dict[str, Any]) -> str:
    s = data.get("summary") or summary(data["runs"])
    e = html.escape
    rows = []
    for r in sorted(data["runs"], key=lambda r: r["key"]):
        traj = r.get("trajectory")
        preview = f'<a href="{e(traj)}/meta.json">bundle</a> <img loading="lazy" src="{e(traj)}/preview.gif" ' \
                  f'alt="preview of {e(r["key"])}">' if traj else ""
        why = e(r.get("error") or "")
        rows.append(f'<tr class="{"pass" if r["success"] else "fail"}"><td>{e(r["key"])}</td><td>{e(r["outcome"])}'
                    f'</td><td>{r["score"]:.2f}</td><td>{r["steps"]}</td><td>{r["input_tokens"]:,}/'
                    f'{r["output_tokens"]:,}</td><td>${r["cost_usd"]:.4f}</td><td>{r["wall_s"]:.1f} s</td>'
                    f'<td>{why}</td><td>{preview}</td></tr>')
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Evaluation: {e(data['suite'])}</title>
<style>body{{font:14px sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;vertical-align:top}}tr.pass td:first-child{{border-left:4px solid #2e7d32}}
tr.fail td:first-child{{border-left:4px solid #c62828}}img{{max-width:240px;display:block}}</style></head><body>
<h1>Evaluation: {e(data['suite'])}</h1>
<p id="rate"><strong>Success rate {_pct(s['success_rate'])}</strong> ({s['successes']}/{s['runs']}),
95 % CI {_pct(s['ci95'][0])} – {_pct(s['ci95'][1])}; mean score {s['mean_score']:.2f};
{s['input_tokens']:,} input / {s['output_tokens']:,} output tokens; ${s['cost_usd']:.4f}; {s['wall_s']:.1f} s.</p>
<p>Model <code>{e(str(data.get('options', {}).get('model')))}</code>. Replay a run: serve this directory's
<code>data</code> with <code>DESKPILOT_DATA_DIR=data deskpilot serve</code> and open
<code>/static/replay.html?session=ID</code> (owner <code>eval</code>).</p>
<table><thead><tr><th>task</th><th>outcome</th><th>score</th><th>steps</th><th>tokens in/out</th><th>cost</th>
<th>wall</th><th>error</th><th>trajectory</th></tr></thead><tbody>
{''.join(rows)}
</tbody></table></body></html>
"""


def write_reports(out_dir: Path, data: dict[str, Any]) -> None:
    (out_dir / "report.md").write_text(markdown(data))
    (out_dir / "report.html").write_text(html_report(data))


def compare(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Two result sets side by side: per task (success rate over repeats) and overall with the difference."""
    def per_task(data: dict[str, Any]) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for r in data["runs"]:
            wins, n = out.get(r["task_id"], (0, 0))
            out[r["task_id"]] = (wins + int(r["success"]), n + 1)
        return out

    ta, tb = per_task(a), per_task(b)
    sa, sb = summary(a["runs"]), summary(b["runs"])
    d, low, high = newcombe(sa["successes"], sa["runs"], sb["successes"], sb["runs"])
    ma, mb = a.get("options", {}).get("model"), b.get("options", {}).get("model")
    lines = [f"# Compare: A = {a['suite']} ({ma}), B = {b['suite']} ({mb})", "",
             f"A {_pct(sa['success_rate'])} ({sa['successes']}/{sa['runs']}), B {_pct(sb['success_rate'])} "
             f"({sb['successes']}/{sb['runs']}); B − A = {100 * d:+.1f} points, 95 % CI "
             f"{100 * low:+.1f} … {100 * high:+.1f}.", "",
             f"Cost A ${sa['cost_usd']:.4f} / B ${sb['cost_usd']:.4f}; model calls A {sa['steps']} / B {sb['steps']}.",
             "", "| task | A | B | change |", "|---|---|---|---|"]
    def cell(t: dict[str, tuple[int, int]], task: str) -> str:
        return f"{t[task][0]}/{t[task][1]}" if task in t else "—"

    for task in sorted(set(ta) | set(tb)):
        ra = ta[task][0] / ta[task][1] if task in ta else None
        rb = tb[task][0] / tb[task][1] if task in tb else None
        change = "" if ra is None or rb is None or ra == rb else ("better" if rb > ra else "worse")
        lines.append(f"| {task} | {cell(ta, task)} | {cell(tb, task)} | {change} |")
    return "\n".join(lines) + "\n"


def load_results(path: Path) -> dict[str, Any]:
    return _read(path / "results.json" if path.is_dir() else path)


def _read(file: Path, advice: str = "") -> dict[str, Any]:
    """A results file's data; ConfigError when it cannot be read or is not one."""
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{file}: cannot read results: {exc}{advice}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ConfigError(f"{file}: not a results file")
    return data
