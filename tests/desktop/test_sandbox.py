"""The model's side of a local desktop cannot reach the operator's secrets (issue 11, section 6, high).

Everything goes through the real daemon, as the agent's calls do: its bash tool, its editor tool and its
browser (driven by the computer tool). The service's environment (this process) holds a planted model key;
the data directory holds a database and another session's screenshots, made the way a default umask makes
them (world-readable); a second desktop holds files of its own. Each path an attacker would try must fail,
and each probe is first shown to work on something the sandbox may read, so that a broken probe (a missing
program, a wrong path) cannot pass for a blocked one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from deskpilot.errors import DesktopStartError
from deskpilot.settings import Settings
from desktop.local import LocalDesktop, daemon_env
from desktop.sandbox import UID_BASE, UID_SPAN, Sandbox

PLANTED_KEY = "sk-ant-api03-PLANTED-deskpilot-sandbox-canary"
EDITOR = "text_editor_20250124"
CONNECT = "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('CONNECTED')"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the uid sandbox needs root (as in CI)")


async def sh(desk: LocalDesktop, command: str) -> tuple[str, int]:
    result = await desk.client.tool("bash", {"command": command})
    assert not result.is_error, result.error
    code = int(result.meta["exit_code"])
    return result.output.removesuffix(f"[exit code {code}]") if code else result.output, code


async def edit(desk: LocalDesktop, **input: object) -> tuple[str, str]:
    result = await desk.client.tool("str_replace_based_edit_tool", dict(input), version=EDITOR)
    return result.output, result.error


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory as a default umask leaves it (0755, files 0644), somewhere others can traverse."""
    root = Path(tempfile.mkdtemp(prefix="deskpilot-sbx-test-"))
    root.chmod(0o755)
    db = sqlite3.connect(root / "deskpilot.db")
    db.execute("CREATE TABLE secrets (value TEXT)")
    db.execute("INSERT INTO secrets VALUES (?)", (PLANTED_KEY,))
    db.commit()
    db.close()
    shots = root / "screenshots" / "sess-other"
    shots.mkdir(parents=True)
    (shots / "0001.png").write_text(PLANTED_KEY)
    for path in (root / "deskpilot.db", shots / "0001.png"):
        path.chmod(0o644)
    for path in (root / "screenshots", shots):
        path.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """World-readable pages and files: what the probes must be able to read (their positive control)."""
    root = Path(tempfile.mkdtemp(prefix="deskpilot-sbx-public-"))
    root.chmod(0o755)
    (root / "control.html").write_text("<title>CONTROL-PAGE</title><p>readable</p>")
    (root / "control.txt").write_text("readable\n")
    for path in root.iterdir():
        path.chmod(0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def desks(data_dir: Path, public_dir: Path,
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[LocalDesktop, LocalDesktop]]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", PLANTED_KEY)  # the service's environment holds the model key
    monkeypatch.setenv("DESKPILOT_DATABASE_URL", f"postgresql://u:{PLANTED_KEY}@db/x")
    first = LocalDesktop(800, 600, data_dir=data_dir, start_url=f"file://{public_dir}/control.html",
                         start_timeout_s=120, settings=Settings())
    second = LocalDesktop(640, 480, data_dir=data_dir, browser=False, start_timeout_s=120, settings=Settings())
    await asyncio.gather(first.start(), second.start())
    try:
        yield first, second
    finally:
        await asyncio.gather(first.stop(), second.stop())


def vnc_socket_of(desk: LocalDesktop, vnc_pid: int) -> str:
    args = Path(f"/proc/{vnc_pid}/cmdline").read_bytes().decode().split("\0")
    return args[args.index("-unixsock") + 1]


@pytest.mark.desktop
@needs_root
async def test_the_shell_and_the_editor_reach_no_secret(desks: tuple[LocalDesktop, LocalDesktop], data_dir: Path,
                                                        public_dir: Path) -> None:
    desk, other = desks
    assert desk.dir is not None and other.dir is not None and desk.socket_path is not None
    info = await desk.client.info()

    # Its own identity: a sandbox uid, not the daemon's, with nothing private in its environment.
    out, _ = await sh(desk, "id -u; id -G; printf '%s\\n' \"$HOME\"; env")
    uid, groups, home, *_ = out.splitlines()
    assert UID_BASE <= int(uid) < UID_BASE + UID_SPAN and groups == uid
    assert PLANTED_KEY not in out and "DESKPILOT" not in out and "ANTHROPIC" not in out
    # No setuid program (mount, passwd...) lifts it back up; the browser and window manager are the same uid.
    assert (await sh(desk, "grep NoNewPrivs /proc/self/status"))[0].split() == ["NoNewPrivs:", "1"]
    for component in ("browser", "wm"):
        status = Path(f"/proc/{info.pids[component]}/status").read_text()
        assert f"Uid:\t{uid}\t" in status and "NoNewPrivs:\t1" in status, component
    other_home = (await sh(other, "printf %s \"$HOME\""))[0]
    assert (await sh(other, "id -u"))[0].strip() != uid and other_home != home

    # The planted key is in no process environment it can read; its own (same probe) is readable.
    out, _ = await sh(desk, "tr '\\0' '\\n' < /proc/$$/environ | grep -c '^HOME='")
    assert out.strip() == "1"
    out, _ = await sh(desk, f"cat /proc/*/environ 2>/dev/null | grep -c -a {PLANTED_KEY}")
    assert out.strip() == "0"
    for target in ("$PPID", str(os.getpid()), str(desk.pid)):  # the daemon, the service, the daemon by pid
        out, code = await sh(desk, f"cat /proc/{target}/environ; head -c 16 /proc/{target}/mem")
        assert code != 0 and "Permission denied" in out and PLANTED_KEY not in out, out
    # Another desktop's shell: neither its environment nor a signal.
    other_shell = (await sh(other, "echo $$"))[0].strip()
    out, code = await sh(desk, f"cat /proc/{other_shell}/environ; kill -0 {other_shell}")
    assert code != 0 and "Permission denied" in out and "Operation not permitted" in out

    # The daemon's token: its command line names the file, which cannot be opened; nor can the other's.
    out, code = await sh(desk, "f=$(tr '\\0' '\\n' < /proc/$PPID/cmdline | grep -A1 -x -- --token-file | tail -1);"
                               " echo \"file=$f\"; cat \"$f\"")
    assert f"file={desk.dir / 'token'}" in out and code != 0 and "Permission denied" in out
    for token in (desk.dir / "token", other.dir / "token"):
        assert (await sh(desk, f"cat {token}"))[1] != 0
        assert "Permission denied" in (await edit(desk, command="view", path=str(token)))[1]

    # The daemon's socket (either desktop's) and the VNC socket: no connection, so no approval to skip.
    vnc = vnc_socket_of(desk, info.pids["vnc"])
    listener = str(public_dir / "ok.sock")
    with subprocess.Popen(["python3", "-c", "import socket,sys,time; s=socket.socket(socket.AF_UNIX); "
                           "s.bind(sys.argv[1]); s.listen(); __import__('os').chmod(sys.argv[1], 0o777); "
                           "time.sleep(60)", listener]) as control:
        try:
            for _ in range(100):
                if Path(listener).exists():
                    break
                await asyncio.sleep(0.05)
            out, code = await sh(desk, f"python3 -c \"{CONNECT}\" {listener}")
            assert out.strip() == "CONNECTED" and code == 0, out
        finally:
            control.kill()
    for sock in (desk.socket_path, other.dir / "daemon.sock", vnc):
        out, code = await sh(desk, f"python3 -c \"{CONNECT}\" {sock}")
        assert code != 0 and "CONNECTED" not in out and "PermissionError" in out, out

    # The data directory (database, other sessions' screenshots) and the other desktop's home.
    assert (await sh(desk, f"cat {public_dir}/control.txt"))[0] == "readable\n"
    assert "readable" in (await edit(desk, command="view", path=f"{public_dir}/control.txt"))[0]
    assert (data_dir.stat().st_mode & 0o077) == 0, "the data directory was not closed to others"
    secret_in_other = (await edit(other, command="create", path=f"{other_home}/notes.txt", file_text=PLANTED_KEY))
    assert not secret_in_other[1], secret_in_other
    private = (data_dir / "deskpilot.db", data_dir / "screenshots/sess-other/0001.png", Path(other_home) / "notes.txt")
    for path in private:
        out, code = await sh(desk, f"cat {path}; ls {path.parent}")
        assert code != 0 and PLANTED_KEY not in out and "Permission denied" in out, out
        output, error = await edit(desk, command="view", path=str(path))
        assert "Permission denied" in error and PLANTED_KEY not in output + error
    output, error = await edit(desk, command="create", path=f"{data_dir}/planted.txt", file_text="x")
    assert error and not (data_dir / "planted.txt").exists()

    # The editor still edits (as the sandbox) and its undo history works across calls.
    note = f"{home}/note.txt"
    assert not (await edit(desk, command="create", path=note, file_text="one\n"))[1]
    assert not (await edit(desk, command="str_replace", path=note, old_str="one", new_str="two"))[1]
    assert Path(note).read_text() == "two\n" and Path(note).stat().st_uid == int(uid)
    assert not (await edit(desk, command="undo_edit", path=note))[1]
    assert Path(note).read_text() == "one\n"


@pytest.mark.desktop
@needs_root
async def test_the_browser_cannot_open_the_data_directory(desks: tuple[LocalDesktop, LocalDesktop],
                                                          data_dir: Path) -> None:
    desk, _ = desks
    (data_dir / "secret.html").write_text("<title>SECRET-PAGE</title>")
    (data_dir / "secret.html").chmod(0o644)

    async def title_once(done: Callable[[str], bool]) -> str:
        title = ""
        for _ in range(300):
            title = await desk.client.active_window_title() or ""
            if done(title):
                return title
            await asyncio.sleep(0.1)
        raise AssertionError(f"the browser's title stayed {title!r}")

    control = await title_once(lambda t: "CONTROL" in t)  # file:// of a readable page loads: its own title
    assert "CONTROL-PAGE" in control
    for action in ({"action": "key", "text": "ctrl+l"}, {"action": "type", "text": f"file://{data_dir}/secret.html"},
                   {"action": "key", "text": "Return"}):
        result = await desk.client.tool("computer", action)
        assert not result.is_error, result.error
    title = await title_once(lambda t: bool(t) and t != control)  # navigated: the error page, not the secret
    assert "SECRET-PAGE" not in title


def test_the_daemon_environment_is_an_allow_list() -> None:
    env = daemon_env({"ANTHROPIC_API_KEY": PLANTED_KEY, "DESKPILOT_DESKTOP_TOKEN": "t" * 20, "OPENAI_API_KEY": "k",
                      "DESKPILOT_DATABASE_URL": "postgresql://u:p@h/d", "PATH": "/bin", "LANG": "C.UTF-8",
                      "DESKPILOT_SCREEN_WIDTH": "800", "DESKPILOT_BASH_TIMEOUT_S": "5"})
    assert env == {"PATH": "/bin", "LANG": "C.UTF-8", "DESKPILOT_SCREEN_WIDTH": "800", "DESKPILOT_BASH_TIMEOUT_S": "5"}


def test_without_a_way_to_switch_uid_the_sandbox_refuses_clearly() -> None:
    if os.geteuid() == 0:
        code = ("import os; os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
                "from desktop.sandbox import Sandbox\n"
                "try:\n    Sandbox.create('uid')\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
        done = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True, timeout=60,
                              env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"})
        assert "DesktopStartError" in done.stdout and "DESKPILOT_DESKTOP_SANDBOX=off" in done.stdout, done
    else:
        with pytest.raises(DesktopStartError, match="DESKPILOT_DESKTOP_SANDBOX=off"):
            Sandbox.create("uid")


@needs_root
def test_closing_a_sandbox_kills_everything_its_uid_started() -> None:
    sandbox = Sandbox.create("uid")
    try:
        child = subprocess.Popen(["/bin/sh", "-c", "sleep 300 & sleep 300; wait"], start_new_session=True,
                                 env=sandbox.env(), **sandbox.popen_kwargs())
        deadline = time.monotonic() + 30  # generous: three processes to start on a loaded machine
        while True:
            # _uid_of: another test's process may exit between listdir and stat.
            pids = [p for p in os.listdir("/proc") if p.isdigit() and _uid_of(p) == sandbox.uid]
            if len(pids) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(pids) >= 3
        assert Path(sandbox.home).stat().st_uid == sandbox.uid and (Path(sandbox.home).stat().st_mode & 0o077) == 0
    finally:
        sandbox.close()
    assert child.wait(timeout=10) != 0
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _uid_of(p) == sandbox.uid and _alive(p)]
    assert not sandbox.home.exists()


def _uid_of(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _alive(pid: str) -> bool:
    """Not a zombie (killed orphans wait for init, which may reap them later)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.desktop
async def test_sandbox_off_runs_as_the_service_user_with_an_allow_listed_environment(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The explicit opt-out (a developer without root): no uid switch, but neither the shell nor the daemon
    inherits the service's secrets; the setting travels in the Settings object, not the environment."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", PLANTED_KEY)
    monkeypatch.setenv("DESKPILOT_DESKTOP_SANDBOX", "uid")  # the object below must win over this
    settings = Settings(data_dir=data_dir, desktop_sandbox="off")
    async with LocalDesktop(640, 480, data_dir=data_dir, browser=False, settings=settings) as desk:
        out, code = await sh(desk, "id -u; tr '\\0' '\\n' < /proc/$PPID/cmdline | grep -A1 -x -- --sandbox; "
                                   f"cat /proc/$PPID/environ /proc/$$/environ | grep -c -a {PLANTED_KEY}")
    assert out.split() == [str(os.getuid()), "--sandbox", "off", "0"] and code == 1, out
