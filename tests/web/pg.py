"""A throwaway PostgreSQL cluster for tests: ``initdb`` + ``pg_ctl`` in a private temp dir, unix socket only.

Needs Debian's ``postgresql`` package (binaries under ``/usr/lib/postgresql/<ver>/bin``). PostgreSQL refuses
to run as root, so as root the server runs as the ``postgres`` user, in a 0700 dir that user owns.
No TCP listener (``listen_addresses=''``): only processes that can enter the private dir can connect.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

INSTALL_HINT = "apt-get install -y postgresql (or run scripts/setup-postgres)"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL binaries are not installed here."""


def find_bindir(root: Path = Path("/usr/lib/postgresql")) -> Path | None:
    """The newest installed server's bin dir, or None."""
    found = sorted(root.glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


class PgCluster:
    """One cluster: ``start()``, then ``create_database()`` per test, ``stop()`` at the end."""

    def __init__(self, search_root: Path = Path("/usr/lib/postgresql")) -> None:
        bindir = find_bindir(search_root)
        if bindir is None:
            raise PostgresUnavailable(f"PostgreSQL server binaries not found under /usr/lib/postgresql; {INSTALL_HINT}")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="deskpilot-pg-"))  # short path: unix socket names are limited
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 5432  # only names the socket file in our private dir; no TCP port is opened
        self.pid: int | None = None
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(f"no 'postgres' user to run the server as; {INSTALL_HINT}") from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.bindir / args[0]), *args[1:]], cwd=self.root, capture_output=True,
                              text=True, timeout=timeout, check=False, env={**os.environ, "LC_ALL": "C.UTF-8"},
                              **self._run_as)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stdout}{proc.stderr}\n{log}")
        return proc

    def start(self) -> PgCluster:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        # Durability off: the cluster dies with the test session anyway.
        opts = (f"-k {self.root} -p {self.port} -c listen_addresses='' -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return self

    def psql(self, sql: str, db: str = "postgres") -> str:
        return self._run("psql", "-h", str(self.root), "-p", str(self.port), "-U", "postgres", "-d", db,
                         "-v", "ON_ERROR_STOP=1", "-Atqc", sql).stdout

    def url(self, db: str) -> str:
        return f"postgresql+asyncpg://postgres@/{db}?host={self.root}&port={self.port}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop", timeout=40)
            self._kill_leftover(self.pid)
            self.pid = None
        shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _kill_leftover(pid: int) -> None:
        # Only the postmaster we started, by its PID; it takes its backends with it.
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running, not a zombie (pg_ctl daemonizes the server, so whoever reaps it is not us)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cluster_for_tests(search_root: Path = Path("/usr/lib/postgresql")) -> Iterator[PgCluster]:
    """Body of the session fixture: skip without the package locally, fail loudly in CI (``CI`` set)."""
    try:
        cluster = PgCluster(search_root)
    except PostgresUnavailable as exc:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"CI must test PostgreSQL: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL backend not tested: {exc}")
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise  # installed but broken: a failure everywhere, never a skip
    try:
        yield cluster
    finally:
        cluster.stop()
