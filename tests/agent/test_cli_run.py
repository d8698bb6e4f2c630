"""``deskpilot run`` as a user runs it: a subprocess, a real local desktop, the fake Messages API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import deskpilot
from tests.support.fake_messages import ErrorReply, FakeMessages, Reply, Request, reply, text, tool_use


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "DESKPILOT_"))}
    env.update(DESKPILOT_DATA_DIR=str(tmp_path / "data"), DESKPILOT_MODEL="claude-opus-4-5", **extra)
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen([sys.executable, "-m", "deskpilot.cli", "run", *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_without_an_api_key_it_says_what_to_set(tmp_path: Path) -> None:
    done = deskpilot("run", "open the browser", env=env_for(tmp_path))
    assert done.exit_code == 2
    assert done.stdout == ""
    assert done.stderr.strip() == ("Error: no Anthropic API key: set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL to use "
                                   "a proxy or gateway), e.g. `export ANTHROPIC_API_KEY=sk-ant-...`")


@pytest.mark.desktop
def test_a_run_prints_progress_and_the_answer(fake_messages: FakeMessages, tmp_path: Path) -> None:
    def answer(request: Request) -> Reply | ErrorReply:
        result = request.body["messages"][-1]["content"][0]
        said = " ".join(c.get("text", "") for c in result["content"])
        return reply(text("the shell said hello" if "hello-from-bash" in said else f"unexpected: {said}"))

    fake_messages.script(reply(tool_use("bash", {"command": "echo hello-from-bash"})), answer)
    env = env_for(tmp_path, ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=fake_messages.url)
    done = run_cli(["say hello from the shell", "--width", "800", "--height", "600"], env, tmp_path)

    said = f"stdout: {done.stdout!r}\nstderr: {done.stderr}"
    assert done.returncode == 0, said
    assert done.stdout == "the shell said hello\n", said
    assert "step 1 · bash" in done.stderr, said
    assert "tokens in 1,000" in done.stderr, said
    assert "done · 2 model calls" in done.stderr, said
    assert fake_messages.requests[0].api_key == "test-key"
