"""``deskpilot run --model <provider>/…`` as a user runs it: a subprocess, a real local desktop with the test
page, and each provider's fake API answering with the same vision policy (find the button, click it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.agent.test_cli_run import env_for as base_env
from tests.agent.test_cli_run import run_cli
from tests.support import fake_compat as fc
from tests.support import fake_gemini as fg
from tests.support import fake_openai as fo
from tests.support.cli import deskpilot
from tests.support.scripted_http import Request, ScriptedServer
from tests.support.testpage import BIG_BUTTON, TestPageServer
from tests.support.vision_policy import DONE, decide, to_grid


def openai_turn(request: Request) -> fo.Response:
    items = request.body["input"]
    if any(i.get("type") == "computer_call" and (i.get("action") or {}).get("type") == "click" for i in items):
        return fo.respond(fo.message(DONE))
    outputs = [i for i in items if i.get("type") == "computer_call_output"]
    step = decide(request.images[-1:], clicked=False)
    if step.kind == "click":
        return fo.respond(fo.reasoning("the button is magenta"), fo.computer_call(fo.click(step.x, step.y)))
    return fo.respond(fo.computer_call(fo.screenshot() if not outputs else fo.wait()))


def gemini_turn(request: Request) -> fg.Candidate:
    calls = [p["functionCall"]["name"] for c in request.body["contents"] for p in c["parts"] if "functionCall" in p]
    if "click_at" in calls:
        return fg.candidate(fg.text(DONE))
    step = decide(request.images[-1:], clicked=False)
    if step.kind == "click":
        return fg.candidate(fg.call("click_at", x=to_grid(step.x, step.width), y=to_grid(step.y, step.height)))
    return fg.candidate(fg.call("wait_5_seconds" if calls else "open_web_browser"))


def compat_turn(request: Request) -> fc.Say:
    said = [m["content"] for m in request.body["messages"] if m["role"] == "assistant"]
    if any("click(" in s for s in said):
        return fc.say(f"Thought: done\nAction: finished(content='{DONE}')")
    step = decide(request.images[-1:], clicked=False)
    if step.kind == "click":  # pixels of the resized image it was sent
        return fc.say(f"Thought: the magenta button\nAction: click(start_box='<|box_start|>({step.x},{step.y})"
                      "<|box_end|>')")
    return fc.say("Thought: the page is loading\nAction: wait()")


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in base_env(tmp_path).items() if not k.startswith(("OPENAI_", "GEMINI_", "GOOGLE_"))}
    return {**env, **extra}


CASES: dict[str, tuple[type[ScriptedServer], Any, str, dict[str, str]]] = {
    "openai": (fo.FakeOpenAI, openai_turn, "openai/computer-use-preview", {"OPENAI_API_KEY": "k"}),
    "gemini": (fg.FakeGemini, gemini_turn, "gemini/gemini-2.5-computer-use-preview-10-2025",
               {"GEMINI_API_KEY": "k"}),
    "compat": (fc.FakeCompat, compat_turn, "openai-compatible/ui-tars-1.5-7b", {}),
}


@pytest.mark.desktop
@pytest.mark.parametrize("provider", list(CASES))
def test_run_completes_the_task_with_each_provider(provider: str, tmp_path: Path) -> None:
    fake_class, turn, model, keys = CASES[provider]
    with fake_class() as fake, TestPageServer() as page:
        fake.script(*[turn] * 12)
        url = {"openai": {"OPENAI_BASE_URL": f"{fake.url}/v1"}, "gemini": {"DESKPILOT_GEMINI_BASE_URL": fake.url},
               "compat": {"DESKPILOT_OPENAI_COMPAT_BASE_URL": f"{fake.url}/v1"}}[provider]
        env = env_for(tmp_path, **keys, **url)
        env["DESKPILOT_MODEL"] = model
        done = run_cli(["click the big magenta button", "--start-url", page.url, "--width", "1024", "--height", "768",
                        "--policy", "autonomous"], env, tmp_path)
        said = f"stdout: {done.stdout!r}\nstderr: {done.stderr}\nfake errors: {fake.errors}"
        assert done.returncode == 0, said
        assert done.stdout == f"{DONE}\n", said
        clicks = page.wait_for("click")
    x, y, w, h = BIG_BUTTON
    assert [c["target"] for c in clicks] == ["big-button"]
    assert x <= clicks[0]["clientX"] < x + w and y <= clicks[0]["clientY"] < y + h
    assert f"model {model}" in done.stderr


@pytest.mark.parametrize(("model", "message"), [
    ("openai/computer-use-preview", "Error: no OpenAI API key: set OPENAI_API_KEY"),
    ("gemini/gemini-3.5-flash", "Error: no Gemini API key: set GEMINI_API_KEY"),
    ("openai-compatible/ui-tars-1.5", "Error: an openai-compatible model needs an endpoint"),
    ("mistral/large", "Error: unknown model provider 'mistral'"),
])
def test_a_missing_key_or_endpoint_is_a_config_error(model: str, message: str, tmp_path: Path) -> None:
    done = deskpilot("run", "go", "--model", model, env=env_for(tmp_path))
    assert done.exit_code == 2, done.stderr
    assert done.stderr.startswith(message), done.stderr
