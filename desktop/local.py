"""A desktop daemon as a subprocess of this process, on a unix socket in a private directory.

``async with start_local_desktop(1024, 768) as desk: await desk.client.screenshot()``. The socket directory
is 0700 and the token a fresh random secret handed over in a 0600 file (not the environment, which the
desktop's own programs inherit). Readiness is ``/healthz`` answering 200, polled, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from deskpilot.errors import DesktopStartError
from deskpilot.settings import Settings
from desktop.client import DesktopClient

_POLL_S = 0.05
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; keep a margin
# The daemon's environment is an allow-list too: the service's own holds the model key and database URL.
_DAEMON_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH",
               "VIRTUAL_ENV")
_DAEMON_SETTINGS = ("DESKPILOT_SCREEN_", "DESKPILOT_BROWSER", "DESKPILOT_SETTLE_", "DESKPILOT_BASH_",
                    "DESKPILOT_EDITOR_", "DESKPILOT_DESKTOP_START_TIMEOUT_S", "DESKPILOT_DESKTOP_SANDBOX",
                    "DESKPILOT_LOG_")


def daemon_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What ``deskpilot desktopd`` inherits: locale, paths and the desktop's own settings, nothing else."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k in _DAEMON_ENV or k.startswith(_DAEMON_SETTINGS)}


def guard_data_dir(path: Path) -> None:
    """The sandbox uid counts as "others": the data directory (database, screenshots, other desktops) must
    be closed to them. Ours and not shared (world-writable): tighten it; else refuse."""
    info = path.stat()
    if info.st_mode & 0o077 == 0:
        return
    if info.st_uid != os.geteuid() or info.st_mode & 0o002:
        raise DesktopStartError(f"the data directory {path} is open to other users (mode "
                                f"{oct(info.st_mode & 0o777)}): the desktop's programs could read it; make it 0700")
    os.chmod(path, 0o700)


class LocalDesktop:
    """One ``deskpilot desktopd`` subprocess. ``start()`` returns once its desktop answers ``/healthz``."""

    def __init__(self, width: int | None = None, height: int | None = None, *, start_url: str | None = None,
                 data_dir: str | Path | None = None, kiosk: bool = False, browser: bool = True,
                 start_timeout_s: float | None = None, settings: Settings,
                 proxy: str | None = None) -> None:
        self.settings = settings
        self.width = width or settings.screen_width
        self.height = height or settings.screen_height
        self.start_url = start_url if start_url is not None else settings.browser_start_url
        self.kiosk = kiosk
        self.browser = browser
        self.proxy = proxy  # host:port of its egress proxy, or None (no proxy: tests of the desktop itself)
        self.start_timeout_s = start_timeout_s or settings.desktop_start_timeout_s * 2
        self._data_dir = Path(data_dir) if data_dir is not None else settings.data_dir
        self._sandboxed = settings.desktop_sandbox != "off"
        self._client_timeout_s = settings.bash_timeout_s + 30  # a bash call may take its whole timeout
        self.dir: Path | None = None
        self.socket_path: Path | None = None
        self.display = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._client: DesktopClient | None = None

    @property
    def client(self) -> DesktopClient:
        if self._client is None:
            raise DesktopStartError("local desktop not started")
        return self._client

    @property
    def xauthority(self) -> Path | None:
        """The X cookie file of this desktop (for tools that connect to its display from outside)."""
        return self.dir / "Xauthority" if self.dir is not None else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _make_dir(self) -> Path:
        parent = self._data_dir / "desktops"
        try:
            parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self._sandboxed:
                guard_data_dir(self._data_dir)
                guard_data_dir(parent)
            path = Path(tempfile.mkdtemp(prefix="d-", dir=parent))
        except OSError:
            path = Path(tempfile.mkdtemp(prefix="deskpilot-d-"))
        if len(str(path / "daemon.sock")) > _MAX_SOCKET_PATH:  # a deep data_dir: fall back to /tmp
            path.rmdir()
            path = Path(tempfile.mkdtemp(prefix="deskpilot-d-"))
        os.chmod(path, 0o700)
        return path

    async def start(self) -> LocalDesktop:
        if self._proc is not None:
            raise DesktopStartError("local desktop already started")
        self.dir = self._make_dir()
        self.socket_path = self.dir / "daemon.sock"
        token = secrets.token_urlsafe(32)
        token_file = self.dir / "token"
        token_file.touch(mode=0o600)
        token_file.write_text(token)
        args = [sys.executable, "-m", "deskpilot.cli", "desktopd", "--uds", str(self.socket_path),
                "--token-file", str(token_file), "--width", str(self.width), "--height", str(self.height),
                "--start-url", self.start_url, "--kiosk" if self.kiosk else "--no-kiosk",
                "--browser" if self.browser else "--no-browser", "--exit-with-parent",
                "--sandbox", self.settings.desktop_sandbox,
                "--xauth-file", str(self.dir / "Xauthority")]
        if self.proxy is not None:
            args += ["--proxy", self.proxy]
        args += ["--shell-network", self.settings.egress_shell]
        env = daemon_env()
        log_fd = os.open(self.dir / "daemon.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=log_fd, stderr=asyncio.subprocess.STDOUT,
                env=env, start_new_session=True)
        finally:
            os.close(log_fd)
        self._client = DesktopClient(uds=str(self.socket_path), token=token, timeout_s=self._client_timeout_s)
        try:
            await self._wait_healthy()
            self.display = (await self._client.info()).display
        except BaseException:
            await self.stop()
            raise
        return self

    async def _wait_healthy(self) -> None:
        assert self._proc is not None and self._client is not None and self.socket_path is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout_s
        while True:
            if self._proc.returncode is not None:
                raise DesktopStartError(f"desktop daemon exited ({self._proc.returncode}): {self.log_tail()}")
            if self.socket_path.exists() and await self._client.healthz():
                return
            if loop.time() > deadline:
                raise DesktopStartError(f"desktop daemon not healthy after {self.start_timeout_s:.0f}s: "
                                        f"{self.log_tail()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), _POLL_S)  # wakes at once if it dies

    def log_tail(self, limit: int = 800) -> str:
        if self.dir is None:
            return ""
        with contextlib.suppress(OSError):
            return (self.dir / "daemon.log").read_text(errors="replace")[-limit:].strip()
        return ""

    async def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the daemon (it stops its desktop), SIGKILL it if it lingers; remove the private dir."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    async def __aenter__(self) -> LocalDesktop:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


def start_local_desktop(width: int | None = None, height: int | None = None, *, start_url: str | None = None,
                        data_dir: str | Path | None = None, kiosk: bool = False,
                        browser: bool = True, settings: Settings) -> LocalDesktop:
    """A ``LocalDesktop`` to use as ``async with`` (or ``await start_local_desktop(...).start()``)."""
    return LocalDesktop(width, height, start_url=start_url, data_dir=data_dir, kiosk=kiosk, browser=browser,
                        settings=settings)
