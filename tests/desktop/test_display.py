from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
from Xlib import display as xdisplay

from deskpilot.errors import DesktopLostError, DesktopStartError
from deskpilot.settings import Settings
from desktop import probes
from desktop.display import Desktop
from tests.desktop.conftest import MakeDesktop
from tests.support.procnet import socket_inodes, tcp_listening_inodes


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def processes_mentioning(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.desktop
def test_full_desktop_starts_probes_and_stops_cleanly() -> None:
    desktop = Desktop(800, 600, start_url="about:blank", kiosk=False, vnc=True, settings=Settings())
    with desktop:
        assert desktop.components() == {"xvfb": "running", "wm": "running", "vnc": "running",
                                         "browser": "running"}
        disp = xdisplay.Display(desktop.display)
        try:
            screen = disp.screen()
            assert (screen.width_in_pixels, screen.height_in_pixels) == (800, 600)
            assert disp.query_extension("MIT-SHM") is not None
        finally:
            disp.close()
        sock_path = desktop.vnc_socket
        assert sock_path is not None
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(sock_path))
            assert sock.recv(12) == b"RFB 003.008\n"
            sock.sendall(b"RFB 003.008\n")
            assert sock.recv(2) == b"\x01\x01"  # one security type: None (the socket's mode guards it)
        vnc_pid = desktop.pid("vnc")
        assert vnc_pid is not None
        # x11vnc holds its unix socket but no listening TCP socket, v4 or v6 — and did not even try
        # (the log check still holds when someone else already has port 5900).
        assert not socket_inodes(vnc_pid) & tcp_listening_inodes()
        vnc_log = (desktop.workdir / "vnc.log").read_text()
        assert "listening on unix socket" in vnc_log
        assert "Listening for VNC connections on TCP" not in vnc_log
        pids = [desktop.pid(name) for name in ("xvfb", "wm", "vnc", "browser")]
        workdir = desktop.workdir
    assert all(pid is not None and not pid_alive(pid) for pid in pids)
    assert not workdir.exists()
    assert processes_mentioning(f"{workdir}/") == []
    desktop.stop()  # idempotent


def test_two_desktops_side_by_side_get_different_displays(make_desktop: MakeDesktop) -> None:
    first = make_desktop(browser=False, wm=False)
    second = make_desktop(browser=False, wm=False)
    assert first.display != second.display
    assert first.alive() and second.alive()


def test_dead_browser_is_detected_and_restarted(make_desktop: MakeDesktop) -> None:
    desktop = make_desktop(width=640, height=480)
    old_pid = desktop.pid("browser")
    assert old_pid is not None
    os.killpg(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while desktop.components()["browser"] == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert desktop.components()["browser"] == "exited(-9)"
    desktop.restart("browser")
    assert desktop.components()["browser"] == "running"
    assert desktop.pid("browser") != old_pid


def test_dead_xvfb_means_desktop_lost(make_desktop: MakeDesktop) -> None:
    desktop = make_desktop(browser=False, wm=True)
    xvfb_pid = desktop.pid("xvfb")
    assert xvfb_pid is not None
    os.kill(xvfb_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while desktop.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert desktop.components()["xvfb"] == "exited(-9)"
    with pytest.raises(DesktopLostError, match="Xvfb"):
        desktop.restart("wm")
    x_socket = Path(f"/tmp/.X11-unix/X{desktop.display[1:]}")
    assert x_socket.exists()  # a killed Xvfb leaves its socket behind...
    display = desktop.display
    desktop.stop()
    # ...and stop() removes it, so the display number can be used again. (If another test's Xvfb has
    # meanwhile taken the number, the socket is live and rightly left alone.)
    assert not x_socket.exists() or probes.x_connects(display)


@pytest.mark.desktop
def test_component_that_dies_on_start_is_a_clear_error() -> None:
    desktop = Desktop(640, 480, wm=False, vnc=False, settings=Settings())
    desktop.browser_binary = "/bin/false"
    with pytest.raises(DesktopStartError, match=r"browser exited\(1\) while starting"):
        desktop.start()
    # start() cleaned up after itself: the Xvfb it launched is gone.
    assert desktop.components() == {}
