"""Docker HEALTHCHECK for the desktop image: the daemon's ``GET /healthz`` over its unix socket.

Exit 0 when the daemon answers 200 (Xvfb is up), 1 otherwise. Uses only the standard library so it
stays fast and works even when the project's own imports are broken.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=2.5)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2.5)
        sock.connect(self._path)
        self.sock = sock


def become_run_dir_owner(run_dir: str) -> None:
    """The container's user is root without CAP_DAC_OVERRIDE: only the run directory's owner (the daemon's uid)
    may enter it."""
    info = os.stat(run_dir)
    if os.geteuid() == 0 and info.st_uid != 0:
        os.setgroups([])
        os.setgid(info.st_gid)
        os.setuid(info.st_uid)


def main() -> int:
    run_dir = os.environ.get("DESKPILOT_RUN_DIR", "/run/deskpilot")
    path = os.path.join(run_dir, "daemon.sock")
    try:
        become_run_dir_owner(run_dir)
        conn = _UnixHTTPConnection(path)
        conn.request("GET", "/healthz")
        status = conn.getresponse().status
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print(f"healthz: {status}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
