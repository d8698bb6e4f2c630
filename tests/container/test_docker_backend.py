"""The docker backend against a real engine: hardening, a click in the containerized browser, faults,
the warm pool and orphan removal."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from deskpilot.errors import ConfigError, DesktopLostError
from tests.container.conftest import IMAGE, MakeBackend, docker_cli, docker_exec
from tests.support.testpage import BIG_BUTTON, TestPageServer

pytestmark = pytest.mark.docker

CANARY = "sk-ant-canary-must-not-reach-the-desktop"


def _gone(engine: Any, container_id: str) -> bool:
    try:
        engine.containers.get(container_id)
    except docker.errors.NotFound:
        return True
    return False


async def test_desktop_container_is_hardened(make_backend: MakeBackend, engine: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # The service process holds the model key; the desktop must never see it.
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    monkeypatch.setenv("DESKPILOT_ANTHROPIC_API_KEY", CANARY)
    backend = make_backend()
    handle = await backend.acquire("sess-harden", 1024, 768)
    cid = handle.extra["container"]
    attrs = json.loads(docker_cli("inspect", cid))[0]
    config, host = attrs["Config"], attrs["HostConfig"]

    # Root only to become the run directory's owner, with just the capabilities to run the sandbox uid.
    assert config["User"] == "0:0"
    assert host["CapDrop"] == ["ALL"] and sorted(c.removeprefix("CAP_") for c in host["CapAdd"]) == [
        "KILL", "SETGID", "SETUID"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert host["ReadonlyRootfs"] is True
    assert host["PidsLimit"] == 512
    assert host["Memory"] == 2 * 1024**3 and host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 1_000_000_000
    assert host["ShmSize"] == 256 * 1024**2
    assert not host["PortBindings"] and not attrs["NetworkSettings"]["Ports"]
    assert [m["Destination"] for m in attrs["Mounts"]] == ["/run/deskpilot"]
    assert config["Labels"]["deskpilot.managed"] == "1" and config["Labels"]["deskpilot.session"] == "sess-harden"
    env = "\n".join(config["Env"])
    assert "ANTHROPIC" not in env and CANARY not in env

    # The daemon became the image's user (we are root), keeping only KILL, SETGID and SETUID (bits 5-7).
    code, out = docker_exec(engine, cid, "sh", "-c", "grep -E '^(Uid|CapEff):' /proc/$(pgrep -o -f desktopd)/status")
    assert code == 0 and out.split()[1] == "1000" and out.split()[-1] == "00000000000000e0", out
    code, out = docker_exec(engine, cid, "sh", "-c", "find / -xdev -perm -4000 -type f 2>/dev/null | wc -l")
    assert out.strip() == "0"
    # The model's shell: another uid, no capabilities, no way up, nothing writable outside the tmpfs.
    shell = await handle.client.tool("bash", {"command": "id -u; grep CapEff /proc/self/status; sudo -n true; "
                                                         "su -c 'echo BECAME-ROOT' root </dev/null; "
                                                         "touch /etc/deskpilot-write-test"})
    lines = shell.output.splitlines()
    assert int(lines[0]) not in (0, 1000) and lines[1].split()[-1] == "0000000000000000", shell.output
    assert "sudo: command not found" in shell.output and "Read-only file system" in shell.output
    assert "BECAME-ROOT" not in shell.output
    assert "[exit code" in shell.output
    # The agent's own shell runs in the desktop: the key is absent from every process it can see there.
    result = await handle.client.tool("bash", {"command": "echo seen: $(cat /proc/*/environ 2>/dev/null | tr '\\0' "
                                                          "'\\n' | grep -c ANTHROPIC) $(env | grep -c ANTHROPIC)"})
    assert not result.is_error, result.error
    assert result.output.strip() == "seen: 0 0"

    await backend.release(handle)
    assert _gone(engine, cid)



async def test_the_model_cannot_reach_the_token_the_sockets_or_the_daemon(make_backend: MakeBackend,
                                                                          engine: Any) -> None:
    """Issue 11 (section 6, high) in the container: the model's shell runs as a uid that cannot open the run
    directory (token, daemon socket), the daemon's environment or memory, or the VNC socket."""
    backend = make_backend()
    handle = await backend.acquire("sess-probe", 1024, 768)
    cid = handle.extra["container"]
    _, daemon = docker_exec(engine, cid, "pgrep", "-o", "-f", "deskpilot desktopd")
    _, vnc = docker_exec(engine, cid, "sh", "-c", "tr '\\0' '\\n' < /proc/$(pgrep -o x11vnc)/cmdline | "
                                                     "grep -A1 -x -- -unixsock | tail -1")
    daemon, vnc = daemon.strip(), vnc.strip()
    assert daemon.isdigit() and vnc.endswith("vnc.sock"), (daemon, vnc)
    connect = "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('CONNECTED')"

    async def sh(command: str) -> str:
        result = await handle.client.tool("bash", {"command": command})
        assert not result.is_error, result.error
        return result.output

    # The probes work where access is allowed: the shell's own environment, a socket of its own.
    assert "HOME=" in await sh("tr '\\0' '\\n' < /proc/$$/environ")
    own = await sh("python3 -c \"import socket; l = socket.socket(socket.AF_UNIX); l.bind('/tmp/own.sock'); "
                   "l.listen(); c = socket.socket(socket.AF_UNIX); c.connect('/tmp/own.sock'); print('CONNECTED')\"")
    assert "CONNECTED" in own, own
    out = await sh(f"cat /run/deskpilot/token; ls /run/deskpilot; cat /proc/{daemon}/environ; "
                   f"head -c 16 /proc/{daemon}/mem; cat /proc/1/environ")
    assert out.count("Permission denied") == 5 and "DESKPILOT_RUN_DIR" not in out, out
    for sock in ("/run/deskpilot/daemon.sock", vnc):
        out = await sh(f"python3 -c \"{connect}\" {sock}")
        assert "CONNECTED" not in out and "PermissionError" in out, out
    await backend.release(handle)


async def test_click_reaches_the_containerized_browser_and_release_removes_it(
        make_backend: MakeBackend, engine: Any, run_root: Path) -> None:
    with TestPageServer() as page:
        backend = make_backend(start_url=page.url, kiosk=True)
        handle = await backend.acquire("sess-click", 1024, 768)
        cid = handle.extra["container"]
        await asyncio.to_thread(page.wait_ready)
        # A just-mapped browser may drop its first input (a mousedown before its first paint reached the
        # screen): focus it with clicks on empty page space until one arrives, then test the real click once.
        loop = asyncio.get_running_loop()

        def focus_click() -> None:
            click = handle.client.tool("computer", {"action": "left_click", "coordinate": [900, 700]})
            asyncio.run_coroutine_threadsafe(click, loop).result(30)

        await asyncio.to_thread(page.until_delivered, focus_click, lambda events: any(
            e["type"] == "click" for e in events))
        page.reset()
        x, y, w, h = BIG_BUTTON
        result = await handle.client.tool("computer", {"action": "left_click", "coordinate": [x + w // 2, y + h // 2]})
        assert not result.is_error, result.error
        clicks = await asyncio.to_thread(page.wait_for, "click")
        assert clicks[-1]["target"] == "big-button"
        run_dir = run_root / "desktops" / handle.id
        assert (run_dir / "daemon.sock").exists()
        await backend.release(handle)
        assert _gone(engine, cid)
        assert not run_dir.exists()


async def test_killed_container_is_reported_as_a_lost_desktop(make_backend: MakeBackend, engine: Any) -> None:
    backend = make_backend()
    handle = await backend.acquire("sess-kill", 1024, 768)
    cid = handle.extra["container"]
    engine.containers.get(cid).kill()
    with pytest.raises(DesktopLostError) as lost:
        await handle.client.tool("computer", {"action": "screenshot"})
    assert f"container {cid[:10]}" in lost.value.message
    assert "exited" in lost.value.message or "removed" in lost.value.message
    assert await handle.client.healthz() is False
    await backend.release(handle)  # never raises for a dead desktop
    assert _gone(engine, cid)


async def test_browser_killed_inside_is_restarted_by_the_supervisor(make_backend: MakeBackend, engine: Any) -> None:
    with TestPageServer() as page:
        backend = make_backend(start_url=page.url)
        handle = await backend.acquire("sess-browser", 1024, 768)
        cid = handle.extra["container"]
        await asyncio.to_thread(page.wait_ready)
        code, out = docker_exec(engine, cid, "pgrep", "-o", "-x", "chromium")
        assert code == 0, out
        first = int(out.split()[0])
        code, out = docker_exec(engine, cid, "kill", "-9", str(first))
        assert code == 0, out
        # The restarted browser opens the start page again, which reports ready a second time.
        await asyncio.to_thread(page.wait_for, "ready", 2, 60)
        code, out = docker_exec(engine, cid, "pgrep", "-o", "-x", "chromium")
        assert code == 0 and int(out.split()[0]) != first
        info = await handle.client.info()
        assert info.components["browser"] == "running" and info.components["xvfb"] == "running"
        result = await handle.client.screenshot()
        assert not result.is_error and result.image
        await backend.release(handle)


async def test_warm_pool_hands_out_a_prestarted_desktop_and_refills(make_backend: MakeBackend, engine: Any) -> None:
    backend = make_backend(warm_pool=1)
    await backend.wait_pool_ready()
    [warm] = backend.pool_ids()
    handle = await backend.acquire("sess-warm", 1024, 768)
    assert handle.extra["container"] == warm
    labels = engine.containers.get(warm).labels
    assert labels["deskpilot.managed"] == "1"
    result = await handle.client.screenshot()
    assert not result.is_error and result.image
    await backend.wait_pool_ready()
    [refill] = backend.pool_ids()
    assert refill != warm
    # A different screen size cannot use the pool: it gets a cold desktop of its own size.
    other = await backend.acquire("sess-small", 800, 600)
    assert other.extra["container"] not in (warm, refill)
    assert (await other.client.info()).screen_width == 800
    await backend.release(handle)
    await backend.release(other)
    assert _gone(engine, warm)


async def test_orphans_of_a_crashed_service_are_removed_at_start(make_backend: MakeBackend, engine: Any,
                                                                  run_root: Path) -> None:
    crashed = make_backend()
    handle = await crashed.acquire("sess-orphan", 1024, 768)
    orphan = handle.extra["container"]
    # A second service on the same data directory (the first one "crashed" without releasing).
    stale = run_root / "desktops" / handle.id
    assert stale.is_dir()
    restarted = make_backend()
    await restarted.start()
    assert _gone(engine, orphan)
    assert not stale.exists()
    await crashed.release(handle)


async def test_a_socket_path_too_long_is_a_clear_config_error(make_backend: MakeBackend, run_root: Path) -> None:
    backend = make_backend(docker_run_dir=run_root / ("d" * 100))
    with pytest.raises(ConfigError, match="DESKPILOT_DOCKER_RUN_DIR"):
        await backend.start()


_EXITING_SERVICE = """
import asyncio, sys
from pathlib import Path
from deskpilot.settings import Settings
from desktop.backends.docker import DockerBackend

async def main() -> None:
    settings = Settings(data_dir=Path(sys.argv[1]), docker_image=sys.argv[2], docker_network="host",
                        docker_warm_pool=1, desktop_start_timeout_s=90)
    backend = DockerBackend(settings)
    handle = await backend.acquire("sess-exit", 1024, 768)
    await backend.wait_pool_ready()
    print(handle.extra["container"], *backend.pool_ids(), flush=True)

asyncio.run(main())  # exits without release() or aclose(), like a service stopped by its runner
"""


def test_desktops_are_removed_when_the_service_process_exits(engine: Any, run_root: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _EXITING_SERVICE, str(run_root), IMAGE], capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ids = proc.stdout.split()
    assert len(ids) == 2
    assert all(_gone(engine, cid) for cid in ids)


async def test_xvfb_killed_inside_loses_the_desktop_and_says_so(make_backend: MakeBackend, engine: Any) -> None:
    backend = make_backend()
    handle = await backend.acquire("sess-xvfb", 1024, 768)
    cid = handle.extra["container"]
    code, out = docker_exec(engine, cid, "pgrep", "-x", "Xvfb")
    assert code == 0, out
    code, out = docker_exec(engine, cid, "kill", "-9", out.split()[0])
    assert code == 0, out
    with pytest.raises(DesktopLostError) as lost:
        for _ in range(100):  # the daemon notices within its watch interval
            await handle.client.tool("computer", {"action": "screenshot"})
            await asyncio.sleep(0.1)
    assert f"container {cid[:10]}" in lost.value.message and "Xvfb" in lost.value.message
    code, out = docker_exec(engine, cid, "/opt/deskpilot/bin/python", "/usr/local/lib/deskpilot/healthcheck.py")
    assert code == 1 and "healthz: 503" in out
    await backend.release(handle)
    assert _gone(engine, cid)


async def test_vnc_reaches_the_container_only_through_the_daemon_socket(make_backend: MakeBackend,
                                                                        engine: Any) -> None:
    backend = make_backend()
    handle = await backend.acquire("sess-vnc", 1024, 768)
    assert handle.vnc_available
    async with handle.client.vnc_connect(view_only=True) as ws:
        greeting = await asyncio.wait_for(ws.recv(), 30)
    assert isinstance(greeting, bytes) and greeting.startswith(b"RFB 003.")
    # x11vnc itself serves only a unix socket inside the container (and the container publishes no port).
    code, out = docker_exec(engine, handle.extra["container"], "pgrep", "-a", "x11vnc")
    assert code == 0, out
    assert "-rfbport 0" in out and "-rfbportv6 -1" in out and "-unixsock" in out
    await backend.release(handle)
