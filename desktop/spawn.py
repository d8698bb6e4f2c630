"""Start desktop components so that they die with this process, however it dies (even by SIGKILL).

Each child asks the kernel for ``PR_SET_PDEATHSIG(SIGKILL)`` before it execs. The kernel sends that signal
when the *thread* that forked the child exits, not the process, so every fork happens on one spawner thread
that lives exactly as long as the process: a component restarted from a short-lived worker thread would
otherwise be killed the moment that worker retires. The child also checks it was not orphaned between the
fork and the ``prctl`` (the parent may die in that window), and kills itself if it was.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

PR_SET_PDEATHSIG = 1
_SIGKILL = int(signal.SIGKILL)

_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_prctl.restype = ctypes.c_int


def _die_with(parent: int, then: Callable[[], None] | None = None) -> Callable[[], None]:
    """The ``preexec_fn``: runs in the forked child: one prctl, one getppid, nothing that takes a lock;
    then the caller's own ``preexec_fn`` (the sandbox's no-new-privileges), if any."""
    def preexec() -> None:
        if _prctl(PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0) != 0:
            os._exit(126)  # cannot promise to die with the parent: do not start at all
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), _SIGKILL)
        if then is not None:
            then()
    return preexec


class _Spawner:
    """One daemon thread that performs every fork; it never returns before the process ends."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _serve(self) -> None:
        while True:
            job, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to the caller, who raises it in its own thread
                future.set_exception(exc)

    def run(self, job: Callable[[], Any]) -> Any:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="desktop-spawner", daemon=True)
                self._thread.start()
        future: Future[Any] = Future()
        self._jobs.put((job, future))
        return future.result()


_spawner = _Spawner()


def popen_dying_with_us(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(args, **kwargs)`` from the spawner thread, with the child bound to our life."""
    then = kwargs.pop("preexec_fn", None)
    parent = os.getpid()

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(args, preexec_fn=_die_with(parent, then), **kwargs)  # see the module doc

    popen: subprocess.Popen[bytes] = _spawner.run(start)
    return popen
