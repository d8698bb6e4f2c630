from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import asyncio, logging
from deskpilot.logs import bind_log_context, configure_logging
configure_logging("json")
log = logging.getLogger("deskpilot.test")

async def step(session: str) -> None:
    bind_log_context(session_id=session, step=3)
    log.info("clicked")

async def main() -> None:
    await asyncio.gather(step("s1"), step("s2"))
    log.warning("outside")

asyncio.run(main())
"""


def test_json_lines_carry_the_task_bound_context() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    clicked = [r for r in lines if r["event"] == "clicked"]
    assert sorted(r["session_id"] for r in clicked) == ["s1", "s2"]
    assert all(r["step"] == 3 and r["level"] == "info" and r["logger"] == "deskpilot.test" for r in clicked)
    outside = next(r for r in lines if r["event"] == "outside")
    assert "session_id" not in outside  # context is per task, it does not leak
