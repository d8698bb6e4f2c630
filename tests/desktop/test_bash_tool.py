"""The bash tool against a real /bin/bash: persistence, timeouts, restart, output cap, hostile input."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from deskpilot.errors import ToolError, ToolInputError
from deskpilot.settings import Settings
from desktop.display import Desktop
from desktop.sandbox import Sandbox
from desktop.tool_host import make_bash as bash_from_settings
from desktop.tools.bash import MAX_COMMAND_BYTES, BashTool, ansi_c_quote

MakeBash = Callable[..., BashTool]


@pytest.fixture
async def make_bash(tmp_path: Path) -> AsyncIterator[MakeBash]:
    made: list[BashTool] = []

    def factory(**kwargs: Any) -> BashTool:
        kwargs.setdefault("cwd", tmp_path)
        kwargs.setdefault("timeout_s", 20.0)
        kwargs.setdefault("output_cap", 16_000)
        tool = BashTool(**kwargs)
        made.append(tool)
        return tool

    yield factory
    for tool in made:
        await tool.close()


@pytest.fixture
async def bash(make_bash: MakeBash) -> BashTool:
    return make_bash()


async def out(tool: BashTool, command: str) -> str:
    result = await tool.run({"command": command})
    assert not result.is_error
    return result.output


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def wait_dead(pid: int, within_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while pid_alive(pid):
        assert loop.time() < deadline, f"process {pid} still alive"
        await asyncio.sleep(0.05)


async def test_state_persists_between_calls(bash: BashTool, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    assert await out(bash, "pwd") == f"{tmp_path}\n"
    await out(bash, "cd sub && GREETING='hi there' && shout() { echo \"${1^^}\"; }")
    assert await out(bash, "pwd; echo \"$GREETING\"; shout quiet") == f"{tmp_path / 'sub'}\nhi there\nQUIET\n"


async def test_exit_code_and_stderr_are_reported(bash: BashTool) -> None:
    result = await bash.run({"command": "echo to-out; echo to-err >&2; exit_with() { return $1; }; exit_with 7"})
    assert not result.is_error  # a failing command is a normal result, not a tool error
    assert result.output == "to-out\n[stderr]\nto-err\n[exit code 7]"
    assert result.meta["exit_code"] == 7
    assert (await bash.run({"command": "true"})).meta["exit_code"] == 0


async def test_output_without_trailing_newline_is_exact(bash: BashTool) -> None:
    assert await out(bash, "printf 'a\\n\\nb'") == "a\n\nb"
    assert await out(bash, "printf '\\n\\n'") == "\n\n"
    assert await out(bash, "true") == ""


async def test_unicode_in_command_and_output(bash: BashTool) -> None:
    text = "héllo 世界 🎉 'quoted' \"double\" $HOME `tick` \\ back"
    assert await out(bash, f"cat <<'EOF'\n{text}\nEOF") == text + "\n"
    assert await out(bash, "printf '%s' 'é'; printf '\\xff\\n'") == "é\ufffd\n"  # invalid UTF-8 is replaced


async def test_display_and_cwd_are_passed_and_private_env_is_not(
        make_bash: MakeBash, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESKPILOT_DESKTOP_TOKEN", "secret-token")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")
    work = tmp_path / "work"
    tool = make_bash(display=":42", cwd=work, env={"EXTRA": "yes"})
    assert await out(tool, "echo $DISPLAY $EXTRA; pwd; env | grep -c -e secret-token -e sk-secret") == \
        f":42 yes\n{work}\n0\n[exit code 1]"


async def test_commands_reach_the_real_display(make_bash: MakeBash, bare_display: Desktop) -> None:
    tool = make_bash(display=bare_display.display)
    assert await out(tool, "xdotool getdisplaygeometry") == "1024 768\n"


async def test_stdin_reading_commands_get_eof(bash: BashTool) -> None:
    # With a tiny timeout a command waiting on stdin would fail the call instead of returning.
    bash.timeout_s = 5.0
    assert await out(bash, "cat; read -r line; echo \"read=$? [$line]\"; head -c 5") == "read=1 []\n"
    assert await out(bash, "python3 -c 'import sys; print(len(sys.stdin.read()))'") == "0\n"


async def test_background_job_does_not_block_and_close_kills_it(make_bash: MakeBash) -> None:
    tool = make_bash()
    bg_pid = int(await out(tool, "sleep 300 & echo $!"))
    assert pid_alive(bg_pid)
    assert await out(tool, "echo still-responsive") == "still-responsive\n"
    # A background job that writes later does not corrupt the next call's result.
    await out(tool, "(sleep 0.2; echo late) &")
    assert "done" in await out(tool, "sleep 0.5; echo done")
    shell_pid = tool.pid
    assert shell_pid is not None
    await tool.close()
    await wait_dead(bg_pid)
    await wait_dead(shell_pid)
    assert tool.pid is None


async def test_close_during_a_command_ends_it_at_once(make_bash: MakeBash, tmp_path: Path) -> None:
    tool = make_bash(timeout_s=60.0)
    pidfile = tmp_path / "bg.pid"
    task = asyncio.create_task(tool.run({"command": f"sleep 300 & echo $! > {pidfile}; sleep 300"}))
    while not pidfile.exists() or not pidfile.read_text().strip():
        await asyncio.sleep(0.02)
    await asyncio.wait_for(tool.close(), 10)
    with pytest.raises(ToolError, match="closed while the command ran"):
        await task
    await wait_dead(int(pidfile.read_text()))
    assert tool.pid is None
    assert await out(tool, "echo reopened") == "reopened\n"  # a later call starts a new session


async def test_timeout_kills_the_group_and_the_next_call_works(make_bash: MakeBash, tmp_path: Path) -> None:
    tool = make_bash(timeout_s=1.0)
    await out(tool, "MARK=set")
    old_shell = tool.pid
    assert old_shell is not None
    pidfile = tmp_path / "bg.pid"
    with pytest.raises(ToolError) as info:
        await tool.run({"command": f"echo partial-output; sleep 300 & echo $! > {pidfile}; sleep 300"})
    message = info.value.message
    assert "timed out after 1 s" in message and "restarted" in message
    assert "partial-output" in message
    await wait_dead(int(pidfile.read_text()))
    await wait_dead(old_shell)
    assert await out(tool, "echo \"mark=[$MARK]\"; pwd") == f"mark=[]\n{tmp_path}\n"
    assert tool.pid not in (None, old_shell)


async def test_restart_gives_a_fresh_session(bash: BashTool) -> None:
    await out(bash, "export KEEP=1; cd /")
    first = bash.pid
    result = await bash.run({"restart": True})
    assert not result.is_error and result.system == "tool has been restarted."
    assert bash.pid not in (None, first)
    assert first is not None
    await wait_dead(first)
    assert await out(bash, "echo \"[$KEEP]\"") == "[]\n"


async def test_exit_in_command_restarts_the_session(bash: BashTool) -> None:
    with pytest.raises(ToolError, match=r"bash exited \(exit code 3\).*new session") as info:
        await bash.run({"command": "echo bye; exit 3"})
    assert "bye" in info.value.message
    assert await out(bash, "echo back") == "back\n"


async def test_output_cap_keeps_head_and_tail(make_bash: MakeBash) -> None:
    cap = 1000
    tool = make_bash(output_cap=cap)
    full = subprocess.run(["seq", "1", "200000"], capture_output=True, text=True, check=True).stdout
    result = await tool.run({"command": "seq 1 200000"})
    head, marker, tail = re.split(r"\n(\[… \d+ characters truncated …\])\n", result.output)
    assert full.startswith(head) and full.endswith(tail) and tail.endswith("200000\n")
    assert len(head) + len(tail) == cap
    assert marker == f"[… {len(full) - cap} characters truncated …]"
    assert result.meta["truncated"] is True


async def test_output_cap_counts_characters_not_bytes(make_bash: MakeBash) -> None:
    tool = make_bash(output_cap=1000)
    result = await tool.run({"command": "python3 -c \"print('é' * 50000, end='')\""})
    head, tail = result.output.split("\n[… 49000 characters truncated …]\n")
    assert head == "é" * 500 and tail == "é" * 500


async def test_output_cap_shares_room_with_stderr(make_bash: MakeBash) -> None:
    tool = make_bash(output_cap=400)
    result = await tool.run({"command": "seq 1 5000; seq 1 5000 >&2"})
    stdout, stderr = result.output.split("[stderr]\n")
    assert "characters truncated" in stdout and "characters truncated" in stderr
    assert stderr.startswith("1\n2\n") and stderr.rstrip().endswith("5000")
    assert len(result.output) < 400 + 200  # the cap plus two markers and the label


async def test_shell_syntax_and_quoting_cannot_break_the_session(bash: BashTool) -> None:
    result = await bash.run({"command": "echo 'unclosed"})
    assert "unexpected EOF" in result.output and result.meta["exit_code"] == 2
    result = await bash.run({"command": "echo \"unclosed $(date"})
    assert result.meta["exit_code"] == 2
    assert await out(bash, "echo fine") == "fine\n"
    # Output that looks like a sentinel does not end a call early.
    assert await out(bash, "printf '\\n__DP_deadbeef:0\\n'; echo after") == "\n__DP_deadbeef:0\nafter\n"
    # Closing or redirecting the shell's own descriptors inside a command does not lose the result.
    assert await out(bash, "exec 3>&- 4>&-; echo ok") == "ok\n"
    assert await out(bash, "echo next") == "next\n"


async def test_xtrace_does_not_show_the_wrapper(bash: BashTool) -> None:
    result = await bash.run({"command": "set -x; echo a"})
    assert "__DP_" not in result.output
    assert result.output == "a\n[stderr]\n++ echo a\n"
    # Switching it off traces only the user's own command, and later calls are clean.
    assert "__DP_" not in await out(bash, "set +x; echo b")
    assert await out(bash, "echo c") == "c\n"


def test_ansi_c_quote_round_trips_every_byte() -> None:
    text = "".join(chr(c) for c in range(1, 256)) + "€🎉\n'\"\\$`"
    printed = subprocess.run(["bash", "-c", f"printf '%s' {ansi_c_quote(text)}"], capture_output=True,
                             check=True).stdout
    assert printed == text.encode()


@pytest.mark.parametrize(("data", "message"), [
    ({}, "no command provided"),
    ({"command": None}, "no command provided"),
    ({"command": "   \n"}, "no command provided"),
    ({"command": 42}, "`command` must be a string, got int"),
    ({"command": ["ls"]}, "`command` must be a string, got list"),
    ({"command": "ls", "timeout": 5}, "unexpected field(s) for the bash tool: timeout"),
    ({"command": "ls", "restart": True}, "not both"),
    ({"restart": "yes"}, "`restart` must be true or false"),
    ({"command": "echo a\x00b"}, "NUL"),
    ({"command": "echo \ud800"}, "not valid Unicode"),
    ({"command": "echo " + "x" * MAX_COMMAND_BYTES}, f"the limit is {MAX_COMMAND_BYTES}"),
    (["ls"], "must be an object"),
])
async def test_bad_input_is_a_tool_input_error(bash: BashTool, data: Any, message: str) -> None:
    with pytest.raises(ToolInputError) as info:
        await bash.run(data)
    assert message in info.value.message
    assert bash.pid is None  # nothing was started for a rejected call


async def test_large_command_under_the_limit_runs(bash: BashTool) -> None:
    payload = "y" * (MAX_COMMAND_BYTES - 100)
    assert await out(bash, f"X={payload}; echo ${{#X}}") == f"{len(payload)}\n"


async def test_concurrent_calls_are_serialised(bash: BashTool) -> None:
    results = await asyncio.gather(*(bash.run({"command": f"echo start-{i}; sleep 0.05; echo end-{i}"})
                                     for i in range(5)))
    assert [r.output for r in results] == [f"start-{i}\nend-{i}\n" for i in range(5)]


async def test_cancelled_call_leaves_a_working_session(bash: BashTool) -> None:
    task = asyncio.create_task(bash.run({"command": "sleep 300"}))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await out(bash, "echo recovered") == "recovered\n"


def test_the_daemon_builds_it_from_its_settings() -> None:
    settings = Settings(bash_timeout_s=7.5, bash_output_cap=1234)
    tool = bash_from_settings(":0", Sandbox(None, None, Path.home()), settings)
    assert isinstance(tool, BashTool)
    assert (tool.timeout_s, tool.output_cap, tool.cwd) == (7.5, 1234, Path.home())
    assert BashTool(timeout_s=1, output_cap=2).timeout_s == 1
