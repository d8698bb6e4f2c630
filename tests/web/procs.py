"""The service as a real subprocess (``deskpilot serve``), for tests that kill it mid-run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.web.conftest import TLS, free_port


class ServerProcess:
    def __init__(self, data_dir: Path, env: dict[str, str], port: int | None = None) -> None:
        self.data_dir, self.port = data_dir, port or free_port()
        self.env = {**os.environ, "DESKPILOT_DATA_DIR": str(data_dir), "DESKPILOT_PORT": str(self.port),
                    "DESKPILOT_HOST": "127.0.0.1", **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "deskpilot.cli", "serve"], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/healthz", timeout=2, verify=TLS).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError("server did not come up")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown code runs. Then stop the desktops it left behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        kill_desktops_under(self.data_dir)

    def stop(self) -> None:
        """SIGTERM, and the service must shut down by itself: one that needs SIGKILL fails the test."""
        hung = False
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                hung = True
                self.proc.kill()
                self.proc.wait(timeout=30)
        kill_desktops_under(self.data_dir)
        if hung:
            raise AssertionError(f"the service did not stop within 40 s of SIGTERM: {self.log.read_text()[-2000:]}")


def desktops_under(data_dir: Path) -> list[int]:
    """PIDs of the desktop daemons whose socket lives in this data dir (ours alone); each leads its session."""
    needle = str(data_dir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (entry / "cmdline").read_bytes()
            if b"desktopd" in cmd and needle in cmd:
                pids.append(int(entry.name))
    return pids


def kill_desktops_under(data_dir: Path) -> None:
    """Desktop daemons whose socket lives in this test's data dir (ours alone), stopped by PID."""
    pids = desktops_under(data_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)  # each daemon leads its own session; it stops its desktop
    deadline = time.monotonic() + 20
    for pid in pids:
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
