"""The desktop daemon, as a real subprocess with a real desktop, through ``DesktopClient`` and raw HTTP."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from Xlib import display as xdisplay
from Xlib.error import DisplayConnectionError

from deskpilot.errors import DesktopError, DesktopLostError
from deskpilot.settings import Settings
from desktop.client import DesktopClient
from desktop.local import LocalDesktop, start_local_desktop
from tests.support.cli import deskpilot


@pytest.fixture
async def bare(tmp_path: Path) -> AsyncIterator[LocalDesktop]:
    """A daemon whose desktop has no browser: quick to start, and a screen that only we change."""
    async with start_local_desktop(640, 480, data_dir=tmp_path, browser=False, settings=Settings()) as desk:
        yield desk


def raw_http(desk: LocalDesktop) -> httpx.AsyncClient:
    assert desk.socket_path is not None
    return httpx.AsyncClient(base_url="http://desktop", transport=httpx.AsyncHTTPTransport(uds=str(desk.socket_path)))


async def info_json(desk: LocalDesktop) -> dict[str, object]:
    token = (desk.dir / "token").read_text() if desk.dir else ""
    async with raw_http(desk) as http:
        response = await http.get("/info", headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    data: dict[str, object] = response.json()
    return data


@pytest.mark.desktop
async def test_requests_without_or_with_a_wrong_token_get_401(bare: LocalDesktop) -> None:
    async with raw_http(bare) as http:
        assert (await http.get("/healthz")).json() == {"ok": True}  # the one open route
        for method, path in (("GET", "/info"), ("GET", "/frame"), ("POST", "/tools/bash")):
            for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": "Basic x"}):
                response = await http.request(method, path, headers=headers, json={"input": {"command": "id"}})
                assert response.status_code == 401, (method, path, headers)
                assert response.json()["error"] == "unauthorized"
    assert bare.socket_path is not None
    wrong = DesktopClient(uds=str(bare.socket_path), token="not-the-token-at-all", timeout_s=30)
    with pytest.raises(DesktopError, match="rejected the token"):
        await wrong.info()
    with pytest.raises(InvalidStatus):
        async with wrong.vnc_connect(view_only=True):
            pass
    await wrong.aclose()


@pytest.mark.desktop
async def test_info_and_tool_dispatch(bare: LocalDesktop) -> None:
    info = await bare.client.info()
    assert info.display == bare.display and info.display.startswith(":")
    assert (info.screen_width, info.screen_height) == (640, 480)
    assert (info.model_width, info.model_height) == (640, 480)
    assert info.components == {"xvfb": "running", "wm": "running", "vnc": "running"}

    result = await bare.client.tool("bash", {"command": "echo hello; echo $DISPLAY"})
    assert result.output == f"hello\n{bare.display}\n" and not result.is_error

    # The editor writes as the desktop's sandbox: in its home, not in the daemon's private dir.
    home = (await bare.client.tool("bash", {"command": "printf %s \"$HOME\""})).output
    target = Path(home) / "note.txt"
    result = await bare.client.tool("str_replace_based_edit_tool",
                                    {"command": "create", "path": str(target), "file_text": "one\n"})
    assert not result.is_error and target.read_text() == "one\n", bare.log_tail(3000)

    bad = await bare.client.tool("bash", {"command": 42})  # the model's mistake: an error result
    assert bad.is_error
    unknown = await bare.client.tool("paint", {})
    assert unknown.is_error and "unknown tool: paint" in unknown.error
    bad_version = await bare.client.tool("computer", {"action": "screenshot"}, version="computer_1999")
    assert bad_version.is_error and "unknown computer tool version" in bad_version.error


@pytest.mark.desktop
async def test_malformed_bodies_are_400_and_oversized_413(bare: LocalDesktop) -> None:
    token = (bare.dir / "token").read_text() if bare.dir else ""
    auth = {"Authorization": f"Bearer {token}"}
    async with raw_http(bare) as http:
        for body in (b"not json", b"[1, 2]", b'{"input": "ls"}', b'{"input": {}, "version": 3}',
                     b'{"input": {}, "extra": 1}'):
            response = await http.post("/tools/bash", content=body, headers=auth)
            assert response.status_code == 400, body
            assert response.json()["ok"] is False
        response = await http.post("/tools/nope", json={"input": {}}, headers=auth)
        assert response.status_code == 404
        response = await http.post("/tools/bash", content=b"x" * (9 << 20), headers=auth)
        assert response.status_code == 413


@pytest.mark.desktop
async def test_frame_etag_and_304(bare: LocalDesktop, monkeypatch: pytest.MonkeyPatch) -> None:
    first = await bare.client.frame(max_width=320)
    assert first is not None
    jpeg, etag = first
    assert jpeg[:3] == b"\xff\xd8\xff" and etag
    # Unchanged screen: 304, nothing encoded. (Right after start openbox may still set the root cursor,
    # which the frames show; so allow the screen a few tries to become still.)
    for _ in range(20):
        again = await bare.client.frame(etag, max_width=320)
        if again is None:
            break
        etag = again[1]
        await asyncio.sleep(0.1)
    assert again is None

    # Paint the root window from outside the daemon (holding the desktop's cookie): the next frame is new.
    monkeypatch.setenv("XAUTHORITY", str(bare.xauthority))
    disp = xdisplay.Display(bare.display)
    try:
        root = disp.screen().root
        root.change_attributes(background_pixel=disp.screen().white_pixel)
        root.clear_area(0, 0, 640, 480)
        disp.sync()
    finally:
        disp.close()
    changed = await bare.client.frame(etag, max_width=320)
    assert changed is not None and changed[1] != etag


@pytest.mark.desktop
async def test_dead_browser_is_restarted_by_the_daemon(tmp_path: Path) -> None:
    async with start_local_desktop(640, 480, data_dir=tmp_path, kiosk=True, settings=Settings()) as desk:
        before = await info_json(desk)
        pids = before["pids"]
        assert isinstance(pids, dict)
        os.killpg(pids["browser"], signal.SIGKILL)
        async with asyncio.timeout(60):
            while True:
                now = await info_json(desk)
                if now["restarts"] == {"browser": 1} and now["components"] == before["components"]:
                    break
                await asyncio.sleep(0.1)
        assert now["pids"]["browser"] != pids["browser"]  # type: ignore[index]
        assert await desk.client.healthz()


@pytest.mark.desktop
async def test_dead_xvfb_is_503_and_a_clear_error_without_hanging(bare: LocalDesktop) -> None:
    pids = (await info_json(bare))["pids"]
    assert isinstance(pids, dict)
    os.kill(pids["xvfb"], signal.SIGKILL)
    async with asyncio.timeout(15):
        while await bare.client.healthz():
            await asyncio.sleep(0.05)
        with pytest.raises(DesktopLostError, match="desktop lost: Xvfb exited"):
            await bare.client.tool("computer", {"action": "screenshot"})
        with pytest.raises(DesktopLostError, match="Xvfb exited"):
            await bare.client.frame()
    async with raw_http(bare) as http:
        response = await http.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"ok": False, "error": "desktop lost: Xvfb exited", "status": 503}


async def test_unreachable_daemon_is_desktop_lost(tmp_path: Path) -> None:
    client = DesktopClient(uds=str(tmp_path / "nothing.sock"), token="x" * 20, timeout_s=30)
    with pytest.raises(DesktopLostError, match="unreachable"):
        await client.tool("bash", {"command": "true"})
    assert await client.healthz() is False
    await client.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.desktop
async def test_tcp_loopback_mode_and_token_from_env(tmp_path: Path) -> None:
    port = free_port()
    token = "env-token-0123456789"
    env = {**os.environ, "DESKPILOT_DESKTOP_TOKEN": token}
    proc = subprocess.Popen([sys.executable, "-m", "deskpilot.cli", "desktopd", "--port", str(port),
                             "--width", "640", "--height", "480", "--no-browser"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = DesktopClient(f"http://127.0.0.1:{port}", token=token, timeout_s=30)
    try:
        async with asyncio.timeout(60):
            while not await client.healthz():
                assert proc.poll() is None
                await asyncio.sleep(0.05)
        assert (await client.info()).screen_width == 640
    finally:
        await client.aclose()
        proc.terminate()
        proc.wait(timeout=30)


def test_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    # In this process (each refusal comes before the daemon touches signals or starts anything).
    env = {k: v for k, v in os.environ.items() if k != "DESKPILOT_DESKTOP_TOKEN"}
    done = deskpilot("desktopd", "--uds", str(tmp_path / "d.sock"), env=env)
    assert done.exit_code != 0
    assert "no token" in done.stderr
    short = tmp_path / "short"
    short.write_text("abc")
    done = deskpilot("desktopd", "--uds", str(tmp_path / "d.sock"), "--token-file", str(short), env=env)
    assert done.exit_code != 0 and "at least 16" in done.stderr
    done = deskpilot("desktopd", "--port", "1", "--host", "0.0.0.0", env={**env, "DESKPILOT_DESKTOP_TOKEN": "t" * 20})
    assert done.exit_code != 0 and "loopback" in done.stderr


@pytest.mark.desktop
async def test_computer_tool_round_trip_through_the_client(bare: LocalDesktop) -> None:
    shot = await bare.client.screenshot()
    assert not shot.is_error and shot.image is not None
    assert shot.image[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", shot.image[16:24]) == (640, 480)  # IHDR: model size of a 640×480 screen

    moved = await bare.client.tool("computer", {"action": "mouse_move", "coordinate": [123, 45]})
    assert not moved.is_error and moved.image is not None
    where = await bare.client.tool("computer", {"action": "cursor_position"})
    assert where.output == "X=123,Y=45"

    # The model's mistakes: an error result that still carries the screen, and the daemon lives on.
    wrong = await bare.client.tool("computer", {"action": "left_click", "coordinate": [9999, 1]})
    assert wrong.is_error and wrong.image is not None and wrong.image[:4] == b"\x89PNG"
    nonsense = await bare.client.tool("computer", {"action": "fly"})
    assert nonsense.is_error and nonsense.image is not None
    zoom_old = await bare.client.tool("computer", {"action": "zoom", "region": [0, 0, 64, 48]})
    assert zoom_old.is_error  # zoom is not part of computer_20250124
    zoom = await bare.client.tool("computer", {"action": "zoom", "region": [0, 0, 64, 48]},
                                  version="computer_20251124")
    assert not zoom.is_error and zoom.image is not None
    assert await bare.client.healthz()


@pytest.mark.desktop
async def test_dead_window_manager_and_vnc_server_are_restarted(bare: LocalDesktop) -> None:
    before = await info_json(bare)
    pids = before["pids"]
    assert isinstance(pids, dict)
    os.killpg(pids["wm"], signal.SIGKILL)
    os.killpg(pids["vnc"], signal.SIGKILL)
    async with asyncio.timeout(60):
        while True:
            now = await info_json(bare)
            if now["restarts"] == {"wm": 1, "vnc": 1} and now["components"] == before["components"]:
                break
            await asyncio.sleep(0.1)
        async with bare.client.vnc_connect(view_only=True) as ws:  # the new x11vnc answers through the bridge
            assert await ws.recv() == b"RFB 003.008\n"


@pytest.mark.desktop
def test_the_x_server_admits_only_holders_of_the_cookie(bare: LocalDesktop, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert bare.xauthority is not None and stat.S_IMODE(bare.xauthority.stat().st_mode) == 0o600
    monkeypatch.setenv("XAUTHORITY", str(tmp_path / "no-such-file"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # python-xlib drops the refused socket unclosed
        with pytest.raises(DisplayConnectionError):
            xdisplay.Display(bare.display)
        gc.collect()
    monkeypatch.setenv("XAUTHORITY", str(bare.xauthority))
    xdisplay.Display(bare.display).close()
