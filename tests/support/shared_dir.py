"""A directory the model's shell may write to, for tests that check what a bash call did.

The desktop's programs run as a per-desktop sandbox uid (desktop/sandbox.py, docs/security.md), which cannot
enter pytest's ``tmp_path`` (0700, the test's own uid). ``with desktop_writable_dir() as d:`` gives a fresh
directory in the system temp dir, mode 1777, removed afterwards; files the sandbox writes there are 0600 but
the test (root, in CI) reads them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def desktop_writable_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="deskpilot-test-shared-"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
