"""The identity everything the model can reach runs under, apart from the daemon that holds the secrets.

The daemon (``deskpilot desktopd``) keeps its bearer token, the X cookie, the VNC socket and its logs. The
programs the model drives — the window manager, the browser, the bash tool's shell, the editor's file I/O and
whatever they start — run as a *sandbox uid*: a fresh uid picked per desktop from a reserved range (no passwd
entry), with an allow-listed environment, umask 077 and a home of its own. A uid, not an environment filter,
is what keeps ``/proc/<pid>/environ|mem`` of the service and the daemon, the data directory (0700), the token
file and the daemon/VNC sockets out of reach: the kernel checks it on every open, whatever the model runs.

Mode ``uid`` needs root or CAP_SETUID/CAP_SETGID (the service as root, or the desktop container). Mode
``off`` runs them as the daemon's own uid: only for a developer who accepts that the model's shell can read
everything the service can (see docs/security.md); nothing falls back to it silently.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deskpilot.errors import DesktopStartError

# Far above login (1000-60000), systemd dynamic (61184-65519) and container subuid ranges (100000-~10^7).
UID_BASE = 1_500_000_000
UID_SPAN = 1 << 24
# Variables a desktop program may inherit from the daemon; everything else (API keys, tokens, database URLs,
# proxies with credentials) stays behind.
_INHERITED = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)


def make_non_dumpable() -> None:
    """Keep same-uid processes out of ``/proc/<self>/{environ,mem,fd}`` and ptrace (the token is in memory)."""
    if _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _no_new_privileges() -> None:
    """In the forked child, after the uid switch: setuid binaries (mount, passwd...) cannot raise it again."""
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        os._exit(126)


def can_switch_uid() -> bool:
    """Root, or CAP_SETUID and CAP_SETGID in the effective set (the desktop container's daemon)."""
    if os.geteuid() == 0:
        return True
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                eff = int(line.split()[1], 16)
                return bool(eff & (1 << 6)) and bool(eff & (1 << 7))
    except (OSError, ValueError):
        pass
    return False


def _uids_in_use() -> set[int]:
    used: set[int] = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                used.add(entry.stat().st_uid)
    return used


def _pick_uid() -> int:
    used = _uids_in_use()
    for _ in range(64):
        uid = UID_BASE + secrets.randbelow(UID_SPAN)
        if uid not in used:
            return uid
    raise DesktopStartError("no free sandbox uid")  # 64 collisions in 16M: something is very wrong


def proxy_env(proxy: str) -> dict[str, str]:
    """Proxy variables for the model's programs: everything through the egress proxy, loopback included
    (``no_proxy`` empty); programs that ignore them are not held by them (docs/security.md). Defined here,
    not in ``desktop/egress_proxy.py``: this module stays standard-library only (the editor worker imports
    it as the sandbox uid, with a bare Python)."""
    url = f"http://{proxy}"
    return {"http_proxy": url, "https_proxy": url, "HTTP_PROXY": url, "HTTPS_PROXY": url, "all_proxy": url,
            "ALL_PROXY": url, "no_proxy": "", "NO_PROXY": ""}


class Sandbox:
    """One desktop's model-facing identity: ``uid``/``gid`` (None when mode is ``off``) and ``home``."""

    def __init__(self, uid: int | None, gid: int | None, home: Path) -> None:
        self.uid = uid
        self.gid = gid
        self.home = home
        self.xauthority: Path | None = None
        self.proxy: str | None = None  # host:port of the desktop's egress proxy (desktop/egress_proxy.py)
        self.shell_network = "proxy"  # or "none": the shell in an empty network namespace (egress_shell)

    @classmethod
    def create(cls, mode: str, parent: str | Path | None = None) -> Sandbox:
        """A new sandbox with a fresh home (0700, owned by the sandbox uid) under ``parent`` (default: tmp)."""
        if mode not in ("uid", "off"):
            raise DesktopStartError(f"unknown desktop sandbox mode {mode!r} (uid or off)")
        if mode == "uid" and not can_switch_uid():
            raise DesktopStartError(
                "the desktop sandbox runs the model's programs as a separate uid, which needs root or "
                "CAP_SETUID/CAP_SETGID; run the service as root, use the docker backend, or set "
                "DESKPILOT_DESKTOP_SANDBOX=off to accept that the model's shell can read everything this user "
                "can (the API key, the database, every session; see docs/security.md)")
        if mode == "off":
            return cls(None, None, Path(tempfile.mkdtemp(prefix="deskpilot-home-", dir=parent)))
        uid = _pick_uid()
        sandbox = cls(uid, uid, Path(parent or tempfile.gettempdir()) / f"deskpilot-home-{secrets.token_hex(8)}")
        # Made by the sandbox uid itself: the daemon may hold CAP_SETUID but not CAP_CHOWN (the container).
        sandbox.run_as(["/bin/mkdir", "-m", "0700", "--", str(sandbox.home)])
        return sandbox

    @property
    def separate(self) -> bool:
        return self.uid is not None

    def env(self, display: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The whole environment of a model-reachable process: an allow-list, never the daemon's own."""
        env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
        env.setdefault("PATH", _DEFAULT_PATH)
        env.setdefault("LANG", "C.UTF-8")
        env.update({"HOME": str(self.home), "USER": "desktop", "LOGNAME": "desktop", "SHELL": "/bin/bash",
                    "XDG_CONFIG_HOME": str(self.home / ".config"), "XDG_CACHE_HOME": str(self.home / ".cache")})
        if display is not None:
            env["DISPLAY"] = display
        if self.xauthority is not None:
            env["XAUTHORITY"] = str(self.xauthority)
        if self.proxy is not None:
            env.update(proxy_env(self.proxy))
        env.update(extra or {})
        return env

    def popen_kwargs(self) -> dict[str, Any]:
        """``subprocess.Popen`` arguments that start a process as this sandbox (no supplementary groups).

        The working directory is ``/``: Popen changes it before it switches uid, and a daemon without
        CAP_DAC_OVERRIDE (the container's) cannot enter the sandbox's home; the bash tool ``cd``s itself."""
        kwargs: dict[str, Any] = {"umask": 0o077, "cwd": "/", "preexec_fn": _no_new_privileges}
        if self.uid is not None:
            kwargs.update(user=self.uid, group=self.gid, extra_groups=[])
        return kwargs

    def run_as(self, argv: list[str], data: bytes | None = None) -> None:
        """Run a small helper as the sandbox (umask 077, clean environment); raise when it fails."""
        try:
            done = subprocess.run(argv, input=data, capture_output=True, timeout=30, env={"PATH": _DEFAULT_PATH},
                                  start_new_session=True, **self.popen_kwargs())
        except (OSError, subprocess.SubprocessError) as exc:
            raise DesktopStartError(f"cannot run {argv[0]} as the desktop sandbox: {exc}") from exc
        if done.returncode != 0:
            raise DesktopStartError(f"{' '.join(argv)} as the desktop sandbox failed ({done.returncode}): "
                                    f"{done.stderr.decode(errors='replace').strip()}")

    def install_xauthority(self, source: Path) -> None:
        """A copy of the X cookie the sandbox uid can read (the daemon's own stays 0600 in its private dir),
        written by the sandbox itself so that it owns it."""
        target = self.home / ".Xauthority"
        self.run_as(["/bin/sh", "-c", 'cat > "$1"', "sh", str(target)], source.read_bytes())
        self.xauthority = target

    def kill_all(self) -> None:
        """SIGKILL every process of the sandbox uid (whatever the model started, daemonised or not)."""
        if self.uid is None:
            return
        # kill(-1) as that uid reaches exactly the processes it owns (not itself): no /proc race with forks.
        # It exits 1 when there was nothing left to kill.
        with contextlib.suppress(DesktopStartError):
            self.run_as(["/bin/kill", "-9", "-1"])

    def close(self) -> None:
        """Kill what is left of the sandbox and remove its home (as the sandbox: the daemon may not)."""
        self.kill_all()
        if self.uid is None:
            shutil.rmtree(self.home, ignore_errors=True)
        else:
            with contextlib.suppress(DesktopStartError):
                self.run_as(["/bin/rm", "-rf", "--", str(self.home)])



class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_CAP_V3 = 0x20080522
_PR_SET_KEEPCAPS = 8
_CAP_KILL, _CAP_SETGID, _CAP_SETUID = 5, 6, 7


def become_owner_of(path: Path) -> None:
    """In the desktop container (started as root with only CAP_SETUID/SETGID/KILL): take the uid and gid that
    own ``path`` (the bind-mounted run directory, so the service can reach the socket made there), keeping
    just those capabilities, to start and stop the sandbox's processes as another uid. No-op unless root."""
    info = path.stat()
    if os.geteuid() != 0 or info.st_uid == 0:
        return
    keep = (1 << _CAP_KILL) | (1 << _CAP_SETGID) | (1 << _CAP_SETUID)
    if _libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_KEEPCAPS) failed")
    os.setgroups([])
    os.setresgid(info.st_gid, info.st_gid, info.st_gid)
    os.setresuid(info.st_uid, info.st_uid, info.st_uid)  # keeps the permitted set, clears the effective one
    header = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = keep
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    _libc.prctl(_PR_SET_KEEPCAPS, 0, 0, 0, 0)
