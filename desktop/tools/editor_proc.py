"""The editor tool with its file I/O done as the desktop's sandbox, not as the daemon.

The daemon holds secrets and can open every private file; the model's ``view``/``create``/``str_replace`` must
open only what the sandbox uid may. So the ``EditTool`` lives in a worker process started as the sandbox (the
same identity and environment as the bash tool), one JSON line per call each way. The worker owns the undo
history; it lives as long as the desktop's editor, and a worker that dies is started again (its history is
lost then, and the call says so).

Run as ``python -m desktop.tools.editor_proc --view-cap N`` (by ``SandboxedEditor`` only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from deskpilot.errors import DeskpilotError, ToolError, ToolInputError
from desktop.sandbox import Sandbox
from desktop.tools.base import ToolResult
from desktop.tools.editor import EditTool

_LINE_LIMIT = 64 << 20  # a call carries at most the daemon's 8 MiB body; a reply at most a capped view
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # where `desktop` is importable from


class SandboxedEditor:
    """``EditTool``'s interface (``run(input, version=)``), executed by a worker running as ``sandbox``."""

    name = "str_replace_based_edit_tool"

    def __init__(self, sandbox: Sandbox, *, view_cap: int, max_characters: int | None = None) -> None:
        self._sandbox = sandbox
        self._args = ["--view-cap", str(view_cap)]
        if max_characters is not None:
            self._args += ["--max-characters", str(max_characters)]
        self._proc: asyncio.subprocess.Process | None = None
        self._python: str | None = None
        self._lock = asyncio.Lock()

    async def run(self, input: dict[str, Any], *, version: str | None = None) -> ToolResult:
        async with self._lock:
            restarted = self._proc is not None and self._proc.returncode is not None
            try:
                reply = await self._call({"input": input, "version": version})
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                await self._kill()
                raise ToolError(f"the editor's worker failed ({type(exc).__name__}); it will be restarted "
                                "on the next call, and undo_edit history is lost") from None
        if reply.get("input_error"):
            raise ToolInputError(str(reply["error"]))
        if reply.get("error"):
            raise ToolError(str(reply["error"]))
        system = "the editor was restarted: undo_edit history before this call is lost" if restarted else ""
        return ToolResult(output=str(reply.get("output", "")), system=system)

    async def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        if self._proc is None or self._proc.returncode is not None:
            await self._start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(request).encode() + b"\n")
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def _start(self) -> None:
        if self._python is None:
            self._python = await asyncio.to_thread(python_for, self._sandbox)
        env = self._sandbox.env(extra={"PYTHONPATH": _PACKAGE_ROOT, "PYTHONDONTWRITEBYTECODE": "1"})
        self._proc = await asyncio.create_subprocess_exec(
            self._python, "-s", "-P", "-m", "desktop.tools.editor_proc", *self._args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env=env, start_new_session=True, limit=_LINE_LIMIT, **self._sandbox.popen_kwargs())

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()

    async def close(self) -> None:
        async with self._lock:
            await self._kill()


def python_for(sandbox: Sandbox) -> str:
    """An interpreter the sandbox uid may run: ours, unless it lives somewhere private (a pyenv under /root);
    then the system's. The worker needs only the standard library and this package's source."""
    for candidate in dict.fromkeys([sys.executable, "/usr/bin/python3"]):
        with contextlib.suppress(DeskpilotError):
            sandbox.run_as([candidate, "-s", "-P", "-c", "import sys; sys.exit(sys.version_info < (3, 11))"])
            return candidate
    raise ToolError("the editor cannot run: no Python 3.11+ interpreter is executable by the desktop's sandbox "
                    f"user (tried {sys.executable} and /usr/bin/python3)")


def _serve(tool: EditTool) -> None:
    for line in sys.stdin.buffer:
        try:
            request = json.loads(line)
            result = tool.execute(request["input"], version=request.get("version"))
            reply: dict[str, Any] = {"output": result.output}
        except ToolInputError as exc:
            reply = {"error": exc.message, "input_error": True}
        except ToolError as exc:
            reply = {"error": exc.message}
        except Exception as exc:  # a bug must cost one call, not the worker and its history
            reply = {"error": f"internal error: {type(exc).__name__}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(prog="desktop.tools.editor_proc")
    parser.add_argument("--view-cap", type=int, required=True)
    parser.add_argument("--max-characters", type=int, default=None)
    args = parser.parse_args()
    _serve(EditTool(max_characters=args.max_characters, view_cap=args.view_cap))


if __name__ == "__main__":
    main()
