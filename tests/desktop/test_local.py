"""Local desktops: daemons as subprocesses, side by side, private, and cleaned up; the local backend."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from pathlib import Path

import pytest

from deskpilot.errors import DesktopLostError, DesktopStartError
from deskpilot.settings import Settings
from desktop.backends import DesktopBackend, get_backend
from desktop.backends.local import LocalBackend
from desktop.client import DesktopClient
from desktop.local import LocalDesktop, start_local_desktop


def pid_gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


@pytest.mark.desktop
async def test_two_local_desktops_side_by_side_are_private_and_cleaned_up(tmp_path: Path) -> None:
    first = LocalDesktop(640, 480, data_dir=tmp_path, browser=False, settings=Settings())
    second = LocalDesktop(640, 480, data_dir=tmp_path, browser=False, settings=Settings())
    await asyncio.gather(first.start(), second.start())
    try:
        assert first.display != second.display
        assert first.socket_path != second.socket_path
        for desk in (first, second):
            assert desk.dir is not None and desk.dir.parent == tmp_path / "desktops"
            assert stat.S_IMODE(desk.dir.stat().st_mode) == 0o700
            assert stat.S_IMODE((desk.dir / "token").stat().st_mode) == 0o600
            assert await desk.client.healthz()
        # Each daemon runs its own desktop: the same command answers with its own display.
        outputs = await asyncio.gather(*(d.client.tool("bash", {"command": "echo $DISPLAY"}) for d in (first, second)))
        assert [o.output.strip() for o in outputs] == [first.display, second.display]
        info = await first.client.info()
        daemon_pid = first.pid
        assert daemon_pid is not None and info.components["xvfb"] == "running"
        xvfb_pid = info.pids["xvfb"]
    finally:
        old_dir = first.dir
        await first.stop()
    assert pid_gone(daemon_pid)
    assert old_dir is not None and not old_dir.exists()
    assert pid_gone(xvfb_pid)  # its Xvfb went with it
    await first.stop()  # idempotent
    assert await second.client.healthz()  # the other one is untouched
    await second.stop()


async def test_a_desktop_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    desk = start_local_desktop(640, 480, data_dir=tmp_path, browser=False, settings=Settings())
    desk.width = 100_000  # the daemon refuses a screen this wide
    with pytest.raises(DesktopStartError, match=r"(?s)desktop daemon exited.*--width"):
        await desk.start()
    assert desk.pid is None and desk.dir is None
    assert list((tmp_path / "desktops").iterdir()) == []


@pytest.mark.desktop
async def test_a_deep_data_dir_falls_back_to_a_short_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    async with start_local_desktop(640, 480, data_dir=deep, browser=False, settings=Settings()) as desk:
        assert desk.socket_path is not None and len(str(desk.socket_path)) <= 100
        assert await desk.client.healthz()


@pytest.mark.desktop
async def test_local_backend_acquire_and_release(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, desktop_backend="local")
    backend = get_backend(settings)
    assert isinstance(backend, LocalBackend) and isinstance(backend, DesktopBackend)
    handle = await backend.acquire("session-1", 800, 600)
    try:
        assert handle.session_id == "session-1" and handle.vnc_available
        info = await handle.client.info()
        assert (info.screen_width, info.screen_height) == (800, 600)
        assert info.components["browser"] == "running"
        assert len(backend) == 1
    finally:
        await backend.release(handle)
    assert len(backend) == 0
    with pytest.raises(DesktopLostError):  # the client of a released desktop is closed for good
        await handle.client.tool("bash", {"command": "true"})
    await backend.release(handle)  # idempotent
    await backend.aclose()


def test_socket_dir_is_not_world_readable_even_with_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        desk = LocalDesktop(data_dir=tmp_path, settings=Settings())
        path = desk._make_dir()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "desktops").stat().st_mode) & 0o077 == 0


PARENT = """
import os, subprocess, sys, time
proc = subprocess.Popen([sys.executable, "-m", "deskpilot.cli", "desktopd", "--uds", sys.argv[1], "--no-browser",
                         "--width", "640", "--height", "480", "--exit-with-parent"], start_new_session=True,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(proc.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.desktop
async def test_a_daemon_whose_parent_dies_stops_its_desktop(tmp_path: Path) -> None:
    sock = tmp_path / "d.sock"
    token = "parent-test-token-0123"
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, str(sock), stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "DESKPILOT_DESKTOP_TOKEN": token})
    assert parent.stdout is not None
    daemon_pid = int(await parent.stdout.readline())
    client = DesktopClient(uds=str(sock), token=token, timeout_s=30)
    try:
        async with asyncio.timeout(60):
            while not await client.healthz():
                await asyncio.sleep(0.05)
        pids = (await client.info()).pids
        parent.kill()  # SIGKILL: the parent gets no chance to clean up
        await parent.wait()
        async with asyncio.timeout(30):
            while not (pid_gone(daemon_pid) and pid_gone(pids["xvfb"]) and pid_gone(pids["wm"])):
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        if not pid_gone(daemon_pid):
            os.kill(daemon_pid, signal.SIGTERM)
