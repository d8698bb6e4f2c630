"""The bash tool (``bash_20250124``): one persistent bash session, driven over pipes.

Each call runs the model's command with ``eval`` in the same shell, so ``cd``, variables and functions
persist between calls. The command travels as one ANSI-C quoted word (``$'\\x..'``): a syntax error in
it (an unclosed quote) fails that command alone instead of swallowing the lines that follow. After the
command the shell prints a per-call random sentinel with the exit code on private descriptors 3 and 4
(copies of stdout and stderr that the command cannot close or redirect); each pipe is read until its
sentinel, never until EOF, so background jobs that keep the pipes open do not block a call. The
command's stdin is /dev/null: ``cat`` or ``read`` see EOF at once instead of hanging the tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deskpilot.errors import ToolError, ToolInputError
from desktop.sandbox import Sandbox
from desktop.tools.base import ToolResult

MAX_COMMAND_BYTES = 100_000
_READ_CHUNK = 1 << 16
_SAFE_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-./,:=+@%^")
_QUOTE_TABLE = [chr(b) if b in _SAFE_BYTES else f"\\x{b:02x}" for b in range(256)]


def ansi_c_quote(text: str) -> str:
    """Quote ``text`` as one bash word that bash never re-parses (every unsafe byte as ``\\xHH``)."""
    return "$'" + "".join(map(_QUOTE_TABLE.__getitem__, text.encode())) + "'"


def parse_bash_input(data: Any) -> tuple[str | None, bool]:
    """Validate the model's input; returns ``(command, restart)``."""
    if not isinstance(data, dict):
        raise ToolInputError("the bash tool input must be an object with `command` or `restart`")
    extra = sorted(str(k) for k in data if k not in ("command", "restart"))
    if extra:
        raise ToolInputError(f"unexpected field(s) for the bash tool: {', '.join(extra)}; "
                             "it takes `command` (a string) or `restart: true`")
    restart = data.get("restart")
    if restart is not None and not isinstance(restart, bool):
        raise ToolInputError(f"`restart` must be true or false, got {type(restart).__name__}")
    command = data.get("command")
    if restart:
        if command is not None:
            raise ToolInputError("give either `command` or `restart: true`, not both")
        return None, True
    if command is None:
        raise ToolInputError("no command provided.")
    if not isinstance(command, str):
        raise ToolInputError(f"`command` must be a string, got {type(command).__name__}")
    if not command.strip():
        raise ToolInputError("no command provided (the command is empty).")
    if "\x00" in command:
        raise ToolInputError("the command contains a NUL character, which bash cannot run")
    try:
        size = len(command.encode())
    except UnicodeEncodeError:
        raise ToolInputError("the command is not valid Unicode text (lone surrogate)") from None
    if size > MAX_COMMAND_BYTES:
        raise ToolInputError(f"the command is {size} bytes; the limit is {MAX_COMMAND_BYTES}. "
                             "Write long scripts to a file with the editor tool, then run the file.")
    return command, False


class _ShellExited(Exception):
    pass


class BashTool:
    """A persistent bash session for the model. Calls are serialised; ``close()`` ends the session."""

    name = "bash"
    api_type = "bash_20250124"

    def __init__(
        self,
        display: str | None = None,
        *,
        cwd: str | os.PathLike[str] | None = None,
        timeout_s: float,
        output_cap: int,
        env: Mapping[str, str] | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        if timeout_s <= 0 or output_cap <= 0:
            raise ValueError("timeout_s and output_cap must be positive")
        self.timeout_s = timeout_s
        self.output_cap = output_cap
        # The shell runs as the desktop's sandbox (desktop.sandbox); without one, as this process, but with the
        # same allow-listed environment: never the daemon's own (the token, API keys, database URLs).
        self._sandbox = sandbox or Sandbox(None, None, Path.home())
        self.cwd = Path(cwd) if cwd is not None else self._sandbox.home
        self._env = self._sandbox.env(display, {"TERM": "dumb", "PAGER": "cat", "GIT_PAGER": "cat", **(env or {})})
        self._proc: asyncio.subprocess.Process | None = None
        self._dirty = False  # a call was cancelled mid-command: start afresh next time
        self._closing = False
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        """The session's bash process (and process group) id, if it is running."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def run(self, input: dict[str, Any]) -> ToolResult:
        command, restart = parse_bash_input(input)
        async with self._lock:
            if restart:
                await self._kill()
                await self._start()
                return ToolResult(system="tool has been restarted.")
            assert command is not None
            started = time.monotonic()
            out, err, code, truncated = await self._run_command(command)
        text = out
        if err:
            text += ("" if not text or text.endswith("\n") else "\n") + "[stderr]\n" + err
        if code != 0:
            text += ("" if not text or text.endswith("\n") else "\n") + f"[exit code {code}]"
        meta = {"exit_code": code, "truncated": truncated,
                "duration_ms": round((time.monotonic() - started) * 1000, 1)}
        return ToolResult(output=text, meta=meta)

    async def close(self) -> None:
        """Kill the session's whole process group (background jobs included), even mid-command.

        A later call starts a new session.
        """
        self._closing = True
        self._kill_group()  # now, not after a running command: that call then fails at once
        try:
            async with self._lock:
                await self._kill()
        finally:
            self._closing = False

    async def _start(self) -> None:
        argv = ["/bin/bash", "--noprofile", "--norc"]
        if self._sandbox.shell_network == "none":
            # A user + network namespace of its own: only a loopback, down; nothing of the host's network.
            argv = ["unshare", "--map-current-user", "--net", "--", *argv]
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=self._env, start_new_session=True, **self._sandbox.popen_kwargs(),  # own group: kill it whole
        )
        # The shell enters (and makes) its directory itself: it, not the daemon, may.
        cwd = ansi_c_quote(str(self.cwd)).encode()
        await self._send(b"exec 3>&1 4>&2; mkdir -p -- " + cwd + b" 2>/dev/null; cd -- " + cwd + b"\n")

    async def _send(self, data: bytes) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        try:
            proc.stdin.write(data)
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _ShellExited from exc

    def _kill_group(self) -> None:
        # Synchronous so it also runs on cancellation; pgid == bash's pid (start_new_session).
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    async def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._kill_group()
        self._proc, self._dirty = None, False
        if proc.stdin is not None:
            proc.stdin.close()
        await proc.wait()

    async def _run_command(self, command: str) -> tuple[str, str, int, bool]:
        if self._proc is None or self._dirty or self._proc.returncode is not None:
            await self._kill()
            await self._start()
        proc = self._proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        token = secrets.token_hex(12).encode()
        # The marker is printed from two pieces, so no echo of this line (`set -v`) can fake it;
        # xtrace is paused around the printfs so `set -x` does not show them.
        line = (b"eval " + ansi_c_quote(command).encode() + b" </dev/null 3>&- 4>&-; "
                b"{ __dp_rc=$? __dp_opts=$-; set +x; } 2>/dev/null; "
                b"printf '\\n%s%s:%d\\n' __DP_ " + token + b' "$__dp_rc" >&3; '
                b"printf '\\n%s%s\\n' __DP_ " + token + b" >&4; "
                b"case $__dp_opts in *x*) set -x;; esac\n")
        out = _Capture(self.output_cap, re.compile(rb"\n__DP_" + token + rb":(\d+)\n"))
        err = _Capture(self.output_cap, re.compile(rb"\n__DP_" + token + rb"\n"))
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._send(line)
                await _pump_both(proc.stdout, out, proc.stderr, err)
        except TimeoutError:
            await self._kill()
            await self._restart_quietly()
            raise ToolError(f"The command timed out after {self.timeout_s:g} s and was killed with its "
                            "process group; the bash session was restarted (working directory and "
                            f"variables are reset).{_partial(out, err, self.output_cap)}") from None
        except _ShellExited:
            await self._kill()
            if self._closing:
                raise ToolError("The bash session was closed while the command ran.") from None
            code = proc.returncode
            await self._restart_quietly()
            raise ToolError(f"bash exited (exit code {code}) while running the command; a new session "
                            "was started (working directory and variables are reset)."
                            f"{_partial(out, err, self.output_cap)}") from None
        except BaseException:
            # Cancelled mid-command: the shell is in an unknown state, so the next call starts afresh.
            self._kill_group()
            self._dirty = True
            raise
        assert out.match is not None
        o, e, truncated = _fit(out, err, self.output_cap)
        return o, e, int(out.match.group(1)), truncated

    async def _restart_quietly(self) -> None:
        # A failed restart surfaces on the next call, which tries again.
        with contextlib.suppress(OSError):
            await self._start()


async def _pump_both(out_reader: asyncio.StreamReader, out: _Capture, err_reader: asyncio.StreamReader,
                     err: _Capture) -> None:
    tasks = [asyncio.ensure_future(_pump(out_reader, out)), asyncio.ensure_future(_pump(err_reader, err))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()  # the other pipe's reader, when one of them failed


async def _pump(reader: asyncio.StreamReader, capture: _Capture) -> None:
    while capture.match is None:
        chunk = await reader.read(_READ_CHUNK)
        if not chunk:
            raise _ShellExited
        capture.feed(chunk)


_CONTINUATION = bytes(range(0x80, 0xC0))


def _char_count(data: bytes | bytearray) -> int:
    return len(data.translate(None, _CONTINUATION))  # UTF-8: one non-continuation byte per character


class _Capture:
    """One pipe's output up to its sentinel. Huge output keeps only its head and tail in memory."""

    _HOLD = 96  # bytes held back so that a sentinel split across two reads is still found whole

    def __init__(self, cap: int, marker: re.Pattern[bytes]) -> None:
        self._keep = 4 * cap  # bytes per side: at least `cap` characters of any UTF-8 text
        self._marker = marker
        self._head = bytearray()
        self._tail = bytearray()
        self._held = b""
        self._dropped_bytes = 0
        self._dropped_chars = 0
        self.match: re.Match[bytes] | None = None

    def feed(self, chunk: bytes) -> None:
        buf = self._held + chunk
        match = self._marker.search(buf)
        if match is not None:
            # Anything after the sentinel (a background job's late output) is dropped with it.
            self.match, self._held = match, b""
            self._commit(buf[: match.start()])
            return
        cut = max(0, len(buf) - self._HOLD)
        self._commit(buf[:cut])
        self._held = buf[cut:]

    def _commit(self, data: bytes) -> None:
        room = self._keep - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        self._tail += data
        excess = len(self._tail) - self._keep
        if excess > 0:
            while excess < len(self._tail) and self._tail[excess] & 0xC0 == 0x80:
                excess += 1  # cut at a character boundary
            self._dropped_chars += _char_count(self._tail[:excess])
            self._dropped_bytes += excess
            del self._tail[:excess]

    def parts(self) -> tuple[str, int, str]:
        """``(head, characters dropped, tail)``; everything is in ``head`` when nothing was dropped."""
        if not self._dropped_bytes:
            return bytes(self._head + self._tail + self._held).decode(errors="replace"), 0, ""
        return (self._head.decode(errors="replace"), self._dropped_chars,
                bytes(self._tail + self._held).decode(errors="replace"))


def _clip(head: str, dropped: int, tail: str, budget: int) -> str:
    total = len(head) + dropped + len(tail)
    if total <= budget:
        return head + tail
    keep_head = budget // 2
    keep_tail = budget - keep_head
    if not dropped:
        head, tail = head + tail, head + tail
    omitted = total - keep_head - keep_tail
    return f"{head[:keep_head]}\n[… {omitted} characters truncated …]\n{tail[len(tail) - keep_tail:]}"


def _fit(out: _Capture, err: _Capture, cap: int) -> tuple[str, str, bool]:
    """Clip stdout and stderr to ``cap`` characters together; stderr keeps at least a quarter."""
    oh, od, ot = out.parts()
    eh, ed, et = err.parts()
    o_total, e_total = len(oh) + od + len(ot), len(eh) + ed + len(et)
    if o_total + e_total <= cap:
        return oh + ot, eh + et, False
    e_budget = min(e_total, max(cap // 4, cap - o_total))
    return _clip(oh, od, ot, cap - e_budget), _clip(eh, ed, et, e_budget), True


def _partial(out: _Capture, err: _Capture, cap: int) -> str:
    o, e, _ = _fit(out, err, min(cap, 4000))
    text = o + (("\n[stderr]\n" + e) if e else "")
    return f"\nOutput before that:\n{text}" if text.strip() else ""
