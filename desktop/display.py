"""Start and stop one virtual desktop: Xvfb, openbox, x11vnc (unix socket only) and the browser.

Every component is declared ready by probing it (X connection, WM check window, RFB greeting,
a mapped browser window), never by sleeping. Each runs in its own process group so ``stop()``
kills exactly what this object started, and nothing else on the machine; each also dies with this
process if it is killed outright (``desktop.spawn``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from deskpilot.errors import DesktopError, DesktopLostError, DesktopStartError
from deskpilot.settings import Settings
from desktop import browser_signal, probes
from desktop.egress_proxy import browser_proxy_args
from desktop.sandbox import Sandbox
from desktop.spawn import popen_dying_with_us

log = logging.getLogger(__name__)

COMPONENTS = ("xvfb", "wm", "vnc", "browser")
RESTARTABLE = ("wm", "vnc", "browser")
MODEL_REACHABLE = ("wm", "browser")  # run as the sandbox; Xvfb and x11vnc stay with the daemon (desktop.sandbox)
_FAMILY_LOCAL = 256
_PROBE_INTERVAL_S = 0.05
_OPENBOX_RC = Path(__file__).with_name("openbox-rc.xml")  # package data; why each binding: see the file


def write_cookie(path: Path) -> None:
    """A fresh MIT-MAGIC-COOKIE-1 in Xauthority format: local family, this host, any display number
    (the number is only known once Xvfb has picked it), mode 0600."""
    def field(data: bytes) -> bytes:
        return struct.pack(">H", len(data)) + data

    record = (struct.pack(">H", _FAMILY_LOCAL) + field(socket.gethostname().encode()) + field(b"")
              + field(b"MIT-MAGIC-COOKIE-1") + field(secrets.token_bytes(16)))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(record)


def in_container() -> bool:
    return os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")


@dataclass
class _Proc:
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    killed: bool = False
    on_kill: Callable[[], None] | None = None  # releases what belongs to this process (the browser's pipe)

    def status(self) -> str:
        code = self.popen.poll()
        return "running" if code is None else f"exited({code})"

    def log_tail(self, limit: int = 600) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-limit:].strip()
        return ""


class Desktop:
    """One desktop. ``start()`` blocks until every enabled component answers its probe."""

    def __init__(self, width: int | None = None, height: int | None = None, *, start_url: str | None = None,
                 kiosk: bool = False, browser: bool = True, wm: bool = True, vnc: bool = True,
                 workdir: str | Path | None = None, start_timeout: float | None = None,
                 xauthority: str | Path | None = None, sandbox: Sandbox | None = None,
                 settings: Settings) -> None:
        self.width = width or settings.screen_width
        self.height = height or settings.screen_height
        self.start_url = start_url if start_url is not None else settings.browser_start_url
        self.kiosk = kiosk
        self.enabled = {"xvfb": True, "wm": wm, "vnc": vnc, "browser": browser}
        self.browser_binary = shutil.which(settings.browser) or settings.browser
        self.start_timeout = start_timeout or settings.desktop_start_timeout_s
        self._workdir_parent = Path(workdir) if workdir is not None else None
        self._dir: Path | None = None
        self._procs: dict[str, _Proc] = {}
        self._display_num: int | None = None
        self._lock = threading.RLock()
        self._browser_gen = 0
        self._restarting: set[str] = set()
        # With an Xauthority path the X server admits only clients holding its fresh cookie; this process
        # must point XAUTHORITY at it too (the daemon does), since python-xlib reads only the environment.
        self.xauthority = Path(xauthority) if xauthority is not None else None
        # Without a sandbox (tests driving a Desktop directly) its programs run as this process, in its dir.
        self._given_sandbox = sandbox
        self._sandbox: Sandbox | None = sandbox

    # --- public API -------------------------------------------------------------------------------

    @property
    def display(self) -> str:
        if self._display_num is None:
            raise DesktopError("desktop not started")
        return f":{self._display_num}"

    @property
    def vnc_socket(self) -> Path | None:
        return self._dir / "vnc.sock" if self._dir is not None and self.enabled["vnc"] else None

    @property
    def workdir(self) -> Path:
        if self._dir is None:
            raise DesktopError("desktop not started")
        return self._dir

    def pid(self, component: str) -> int | None:
        proc = self._procs.get(component)
        return proc.popen.pid if proc is not None else None

    def components(self) -> dict[str, str]:
        """Status of each started component: ``running``, ``exited(<code>)`` or ``restarting``.

        Lock-free (a restart may hold the lock for seconds): reads a snapshot of the table.
        """
        status = {name: proc.status() for name, proc in list(self._procs.items())}
        status.update({name: "restarting" for name in list(self._restarting)})
        return status

    def alive(self) -> bool:
        proc = self._procs.get("xvfb")
        return proc is not None and proc.popen.poll() is None

    def start(self) -> Desktop:
        with self._lock:
            if self._dir is not None:
                raise DesktopError("desktop already started")
            if self._workdir_parent is not None:
                self._workdir_parent.mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix="deskpilot-desktop-", dir=self._workdir_parent))
            os.chmod(self._dir, 0o700)
            self._sandbox = self._given_sandbox or Sandbox(None, None, self._dir)
            try:
                self._start_xvfb()
                # Side by side once X is up: openbox adopts (and maximises) windows mapped before it runs.
                launched = [(name, *self._launch(name)) for name in RESTARTABLE if self.enabled[name]]
                for name, proc, probe in launched:
                    self._wait(name, proc, probe)
            except BaseException:
                self.stop()
                raise
            log.info("desktop %s started (%dx%d) in %s", self.display, self.width, self.height, self._dir)
            return self

    def restart(self, component: str) -> None:
        """Restart the window manager, VNC server or browser. Xvfb cannot restart: the desktop is lost."""
        with self._lock:
            if component == "xvfb":
                raise DesktopLostError("desktop lost: Xvfb cannot be restarted")
            if component not in RESTARTABLE or not self.enabled[component]:
                raise DesktopError(f"unknown or disabled component: {component}")
            if not self.alive():
                raise DesktopLostError("desktop lost: Xvfb exited")
            self._restarting.add(component)
            try:
                old = self._procs.pop(component, None)
                if old is not None:
                    self._kill(old)
                self._start(component)
            except BaseException:
                failed = self._procs.get(component)
                if failed is not None:
                    self._kill(failed)  # not ready in time: don't leave a half-started one running
                raise
            finally:
                self._restarting.discard(component)

    def stop(self) -> None:
        """Kill every process group this desktop started and remove its temp dir. Idempotent."""
        with self._lock:
            for name in reversed(COMPONENTS):
                proc = self._procs.pop(name, None)
                if proc is not None:
                    self._kill(proc)
                    if name == "xvfb":
                        self._remove_stale_x_socket()
            if self._dir is not None:
                sandbox = self._sandbox
                if sandbox is not None and sandbox.separate:
                    sandbox.kill_all()  # every process of its uid is this desktop's
                elif sandbox is not None:
                    self._kill_strays(f"{sandbox.home}/")
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def __enter__(self) -> Desktop:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- starting ---------------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], pass_fds: tuple[int, ...] = ()) -> _Proc:
        assert self._dir is not None and self._sandbox is not None
        log_path = self._dir / f"{name}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in _kill
        sandboxed = name in MODEL_REACHABLE
        display = self.display if self._display_num is not None else None
        env = self._sandbox.env(display) if sandboxed else self._env()
        identity = self._sandbox.popen_kwargs() if sandboxed else {}
        # Bound to this process's life: a SIGKILLed daemon leaves no desktop behind (see desktop.spawn).
        popen = popen_dying_with_us(args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                    env=env, pass_fds=pass_fds, start_new_session=True, **identity)
        proc = _Proc(popen, log_path, log_file)
        self._procs[name] = proc
        return proc

    def _env(self) -> dict[str, str]:
        """Xvfb's and x11vnc's environment: the same allow-list, with the daemon's own dir and cookie."""
        assert self._dir is not None
        display = self.display if self._display_num is not None else None
        extra = {"XAUTHORITY": str(self.xauthority)} if self.xauthority is not None else {}
        return Sandbox(None, None, self._dir).env(display, extra)

    def _start_xvfb(self) -> None:
        auth: list[str] = []
        if self.xauthority is not None:
            if os.environ.get("XAUTHORITY") != str(self.xauthority):
                raise DesktopStartError("set XAUTHORITY to the desktop's xauthority path before start()")
            write_cookie(self.xauthority)
            auth = ["-auth", str(self.xauthority)]
        read_fd, write_fd = os.pipe()
        try:
            proc = self._spawn("xvfb", [
                "Xvfb", "-displayfd", str(write_fd), "-nolisten", "tcp", "-noreset", *auth,
                "-screen", "0", f"{self.width}x{self.height}x24", "+extension", "MIT-SHM",
            ], pass_fds=(write_fd,))
            os.close(write_fd)
            write_fd = -1
            self._display_num = self._read_display(read_fd, proc)
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
        self._wait("xvfb", proc, lambda: probes.x_connects(self.display))
        if self.xauthority is not None:
            assert self._sandbox is not None
            if self._sandbox.separate:
                self._sandbox.install_xauthority(self.xauthority)
            else:
                self._sandbox.xauthority = self.xauthority

    def _read_display(self, read_fd: int, proc: _Proc) -> int:
        """Xvfb writes its display number to the pipe once it accepts connections."""
        deadline = time.monotonic() + self.start_timeout
        data = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read_fd], [], [], _PROBE_INTERVAL_S)
            if ready:
                chunk = os.read(read_fd, 64)
                data += chunk
                if b"\n" in data or not chunk:
                    break
            elif proc.popen.poll() is not None:
                break
        text = data.decode(errors="replace").strip()
        if not text.isdigit():
            raise DesktopStartError(f"xvfb did not report a display ({proc.status()}): {proc.log_tail()}")
        return int(text)

    def _start(self, name: str) -> None:
        proc, probe = self._launch(name)
        self._wait(name, proc, probe)

    def _launch(self, name: str) -> tuple[_Proc, Callable[[], bool]]:
        """Spawn one component; returns it with the probe that says it is ready."""
        assert self._dir is not None
        if name == "wm":
            proc = self._spawn("wm", ["openbox", "--sm-disable", "--config-file", str(_OPENBOX_RC)])
            return proc, lambda: probes.wm_ready(self.display)
        if name == "vnc":
            sock = self._dir / "vnc.sock"
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
            # -rfbport 0 -noipv6 alone still listens on [::]:5900; -rfbportv6 -1 stops that. (-localhost would
            # also stop it but refuses unix-socket clients.) The socket file mode and dir guard access.
            proc = self._spawn("vnc", [
                "x11vnc", "-display", self.display, "-rfbport", "0", "-noipv6", "-rfbportv6", "-1",
                "-unixsock", str(sock), "-shared", "-forever", "-nopw", "-noxdamage",
            ])
            return proc, lambda: probes.rfb_greets(sock)
        if name == "browser":
            # DevTools over a pipe only the daemon holds (desktop.browser_signal): the settle rule's signal.
            command, child_fds, cdp = browser_signal.pipe_command(self._browser_args())
            try:
                try:
                    proc = self._spawn("browser", command, pass_fds=child_fds)
                finally:
                    for fd in child_fds:  # Chromium's ends: only Chromium may hold them
                        os.close(fd)
            except BaseException:
                cdp.close()
                raise
            display = self.display
            proc.on_kill = lambda: browser_signal.unregister(display, cdp)
            browser_signal.register(display, cdp)
            return proc, lambda: probes.window_mapped(self.display, "chromium")
        raise DesktopError(f"unknown component {name}")

    def _browser_args(self) -> list[str]:
        assert self._sandbox is not None
        self._browser_gen += 1
        profile = self._sandbox.home / f"profile-{self._browser_gen}"  # fresh: no "restore pages?" prompt
        args = [
            self.browser_binary, f"--user-data-dir={profile}",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            "--disable-sync", "--disable-gpu", "--noerrdialogs", "--disable-features=Translate",
            "--no-default-browser-check", "--password-store=basic", "--test-type",
            "--window-position=0,0", f"--window-size={self.width},{self.height}", "--start-maximized",
            "--remote-debugging-pipe",
        ]
        if os.geteuid() == 0 or in_container():
            args.append("--no-sandbox")
        if in_container():
            args.append("--disable-dev-shm-usage")
        if self.kiosk:
            args.append("--kiosk")
        if self._sandbox.proxy is not None:
            args.extend(browser_proxy_args(self._sandbox.proxy))
        args.append(self.start_url)
        return args

    def _wait(self, name: str, proc: _Proc, probe: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if proc.popen.poll() is not None:
                raise DesktopStartError(f"{name} {proc.status()} while starting: {proc.log_tail()}")
            if name != "xvfb" and not self.alive():
                raise DesktopStartError(f"xvfb exited while starting {name}")
            if probe():
                return
            if time.monotonic() > deadline:
                raise DesktopStartError(f"{name} not ready after {self.start_timeout:.0f}s: {proc.log_tail()}")
            time.sleep(_PROBE_INTERVAL_S)

    # --- stopping ---------------------------------------------------------------------------------

    @staticmethod
    def _kill(proc: _Proc, grace_s: float = 3.0) -> None:
        if proc.killed:
            return  # never signal a group id twice: once empty, the number may belong to someone else
        proc.killed = True
        pgid = proc.popen.pid  # start_new_session: the group id is the leader's pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
            try:
                proc.popen.wait(timeout=grace_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # The leader may be gone while members linger; finish the group off.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        proc.log_file.close()
        if proc.on_kill is not None:
            proc.on_kill()

    @staticmethod
    def _kill_strays(marker: str) -> None:
        """Chromium's crashpad handlers leave our process groups; they are ours if they name our dir."""
        uid = os.getuid()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat().st_uid != uid:
                    continue
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if marker in cmdline:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ValueError):
                continue

    def _remove_stale_x_socket(self) -> None:
        """Xvfb removes its socket on SIGTERM, not after a SIGKILL or a crash. A socket file nobody accepts on
        is our dead server's: remove it so the display number can be reused (-displayfd takes no lock file)."""
        if self._display_num is None:
            return
        path = Path(f"/tmp/.X11-unix/X{self._display_num}")  # noqa: S108 - the X server's fixed path
        if not path.exists():
            return
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
                return  # a live server (a newer one on this number): not ours to touch
            except ConnectionRefusedError:
                pass
            except OSError:
                return
        path.unlink(missing_ok=True)
