"""Desktop components die with the process that started them, even when it is SIGKILLed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from deskpilot.settings import Settings
from desktop.local import start_local_desktop
from desktop.spawn import popen_dying_with_us

DEADLINE_S = 20.0


def pid_gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (by parent pid, read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and not pid_gone(child):
                found.add(child)
                todo.append(child)
    return found


async def wait_all_gone(pids: set[int]) -> set[int]:
    """The pids still alive after a bounded poll (empty when all went)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while (left := {p for p in pids if not pid_gone(p)}) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return left


def kill_leftovers(pids: set[int]) -> None:
    for pid in pids:  # only ever our own daemon's descendants, recorded before the kill
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def remove_dead_x_files(display: str) -> None:
    """A SIGKILLed Xvfb leaves its socket and lock file behind; remove them if nothing listens any more."""
    num = display.lstrip(":")
    sock = Path(f"/tmp/.X11-unix/X{num}")
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(sock))
            return
        except ConnectionRefusedError:
            pass
        except OSError:
            return
    sock.unlink(missing_ok=True)
    Path(f"/tmp/.X{num}-lock").unlink(missing_ok=True)


@pytest.mark.desktop
async def test_a_sigkilled_daemon_takes_every_component_with_it(tmp_path: Path) -> None:
    async with start_local_desktop(640, 480, data_dir=tmp_path, settings=Settings()) as desk:
        assert desk.pid is not None
        info = await desk.client.info()
        assert set(info.pids) == {"xvfb", "wm", "vnc", "browser"}
        assert set(info.components.values()) == {"running"}

        # Have the window manager restarted first: the supervisor does that from a worker thread, the classic
        # way to lose PDEATHSIG (it fires when the forking *thread* exits, not the process).
        old_wm = info.pids["wm"]
        os.kill(old_wm, signal.SIGKILL)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while (info := await desk.client.info()).pids.get("wm") == old_wm or info.components["wm"] != "running":
            assert loop.time() < deadline, f"openbox was not restarted: {info.components}"
            await asyncio.sleep(0.05)

        component_pids = set(info.pids.values())
        tree = descendants(desk.pid)
        assert component_pids <= tree
        profile_dirs = {arg.split("=", 1)[1] for pid in tree for arg in cmdline(pid)
                        if arg.startswith("--user-data-dir=")}
        assert profile_dirs
        # Chromium's crashpad handlers double-fork out of the tree; they are ours when they name our dir.
        marks = {f"{Path(profile).parent}/" for profile in profile_dirs}
        tree |= {pid for pid in all_pids() if any(m in arg for m in marks for arg in cmdline(pid))}

        os.kill(desk.pid, signal.SIGKILL)
        try:
            left = await wait_all_gone(tree)
            assert not left, {pid: cmdline(pid) for pid in left}
        finally:
            kill_leftovers(tree)
            remove_dead_x_files(desk.display)
            for profile in profile_dirs:  # the dead daemon's desktop dir (the profile's parent) is left behind
                shutil.rmtree(Path(profile).parent, ignore_errors=True)


CHILD = """
import sys, threading
from desktop.spawn import popen_dying_with_us
procs = []
worker = threading.Thread(target=lambda: procs.append(popen_dying_with_us(["sleep", "300"])))
worker.start()
worker.join()  # the thread that asked for the fork is gone; the child must live on
print(procs[0].pid, flush=True)
sys.stdin.read()
"""


@pytest.mark.desktop
async def test_a_child_outlives_the_thread_that_asked_for_it_but_not_the_process() -> None:
    parent = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    sleeper = -1
    try:
        assert parent.stdout is not None
        line = await asyncio.to_thread(parent.stdout.readline)
        sleeper = int(line)
        await asyncio.sleep(0.5)  # a PDEATHSIG from the finished (OS) thread lands within this; none must
        assert not pid_gone(sleeper)
        os.kill(parent.pid, signal.SIGKILL)
        assert not await wait_all_gone({sleeper})
    finally:
        parent.kill()
        parent.wait()
        for pipe in (parent.stdin, parent.stdout):
            if pipe is not None:
                pipe.close()
        if sleeper > 0:
            kill_leftovers({sleeper})


def test_a_bad_command_raises_in_the_caller() -> None:
    with pytest.raises(FileNotFoundError) as caught:
        popen_dying_with_us(["/nonexistent/deskpilot-no-such-program"])
    assert caught.value.filename == "/nonexistent/deskpilot-no-such-program"


def all_pids() -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]


def cmdline(pid: int) -> list[str]:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    return []
