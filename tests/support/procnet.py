"""What /proc says about sockets: which inodes are TCP listeners, which sockets a process holds."""

from __future__ import annotations

import os
from pathlib import Path


def tcp_listening_inodes() -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed between listing and reading: not a socket it holds
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def socket_inodes_of(marker: str) -> set[str]:
    """Socket inodes held by every process whose command line names ``marker`` (a desktop's directory)."""
    inodes: set[str] = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                inodes |= socket_inodes(int(proc.name))
        except OSError:  # the process ended meanwhile
            continue
    return inodes
