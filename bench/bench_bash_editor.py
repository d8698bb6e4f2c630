"""Bash and editor tools against the reference demo's approach, in the same run; prints times and ratios.

    .venv/bin/python bench/bench_bash_editor.py [--calls 20]

- bash call: ours reads each pipe until a per-call sentinel arrives; the reference writes
  ``cmd; echo '<<exit>>'`` and polls the pipe buffer every 0.2 s, so every call costs at least 0.2 s.
- directory view: ours walks two levels with ``os.scandir``; the reference runs ``find -maxdepth 2``.
- str_replace on a 2 MB file: same algorithmic work; ours also keeps tabs and CRLF intact.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from desktop.tools.bash import BashTool
from desktop.tools.editor import EditTool


class PollingBash:
    """The reference approach: one sentinel for all calls, output checked every 0.2 s."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "/bin/bash", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)

    async def run(self, command: str) -> str:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{command}; echo '<<exit>>'\n".encode())
        await self.proc.stdin.drain()
        seen = b""
        while b"<<exit>>" not in seen:
            await asyncio.sleep(0.2)
            with contextlib.suppress(TimeoutError):
                seen += await asyncio.wait_for(self.proc.stdout.read(1 << 16), 0.001)
        return seen.split(b"<<exit>>")[0].decode()

    async def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            await self.proc.wait()


async def timed(fn: Callable[[], Awaitable[object]], n: int) -> float:
    """Median seconds of ``n`` calls."""
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def report(name: str, ours: float, reference: float) -> None:
    print(f"{name:<34} ours {ours * 1000:9.2f} ms   reference {reference * 1000:9.2f} ms   "
          f"reference/ours {reference / ours:8.1f}x")


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ours = BashTool(cwd=root, timeout_s=30, output_cap=16_000)
        reference = PollingBash()
        await reference.start()
        try:
            assert (await ours.run({"command": "echo hi"})).output == "hi\n"
            assert (await reference.run("echo hi")).strip() == "hi"
            report("bash `echo hi`", await timed(lambda: ours.run({"command": "echo hi"}), calls),
                   await timed(lambda: reference.run("echo hi"), calls))
            report("bash `seq 1 20000`", await timed(lambda: ours.run({"command": "seq 1 20000"}), calls),
                   await timed(lambda: reference.run("seq 1 20000"), calls))
        finally:
            await ours.close()
            await reference.close()

        tree = root / "tree"
        for i in range(30):
            for j in range(30):
                (tree / f"d{i}" / f"e{j}").mkdir(parents=True)
            (tree / f"d{i}" / ".hidden").write_text("")
        editor = EditTool("text_editor_20250124", view_cap=10**9)

        async def find_listing() -> str:
            proc = await asyncio.create_subprocess_exec(
                "find", str(tree), "-maxdepth", "2", "-not", "-path", r"*/\.*", stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            return out.decode()

        async def our_listing() -> str:
            return (await editor.run({"command": "view", "path": str(tree)})).output

        assert len((await find_listing()).splitlines()) == len((await our_listing()).splitlines()) - 1
        report("view directory (930 entries)", await timed(our_listing, calls), await timed(find_listing, calls))

        big = root / "big.py"
        big.write_text("".join(f"def f{i}(x):\n\treturn x + {i}\n" for i in range(80_000)) + "MARKER\n")

        async def our_replace() -> object:
            await editor.run({"command": "str_replace", "path": str(big), "old_str": "MARKER", "new_str": "M2"})
            return await editor.run({"command": "str_replace", "path": str(big), "old_str": "M2",
                                     "new_str": "MARKER"})

        async def reference_replace() -> object:
            for old, new in (("MARKER", "M2"), ("M2", "MARKER")):
                text = big.read_text().expandtabs()
                if text.count(old) != 1:
                    raise RuntimeError(old)
                big.write_text(text.replace(old, new))
            return None

        our_time = await timed(our_replace, calls)
        assert "\t" in big.read_text()
        report("2 x str_replace on 2 MB file", our_time, await timed(reference_replace, calls))
    print(subprocess.run(["uname", "-sr"], capture_output=True, text=True).stdout.strip(), f"· median of {calls}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20)
    asyncio.run(main(parser.parse_args().calls))
