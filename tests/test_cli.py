from __future__ import annotations

import subprocess
import sys

from deskpilot.cli import COMMANDS
from tests.support.cli import deskpilot

# What a command's --help must not load: the model SDKs and the server stack (seconds of imports).
HEAVY = ("anthropic", "openai", "google.genai", "fastapi", "uvicorn", "sqlalchemy", "alembic")
PROBE = """
import sys
from deskpilot.cli import main
heavy = {heavy!r}
for args in {helps!r}:
    try:
        main(args)
    except SystemExit as exc:
        assert exc.code == 0, (args, exc.code)
    print(" ".join(args), *sorted(m for m in sys.modules if m in heavy), file=sys.stderr)
"""


def test_help_lists_every_command_without_importing_them() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "deskpilot.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in COMMANDS:
        assert name in out


def test_help_of_run_token_and_export_loads_no_model_sdk_or_server() -> None:
    helps = [["--help"], ["run", "--help"], ["token", "--help"], ["export", "--help"], ["eval", "--help"]]
    probe = PROBE.format(heavy=HEAVY, helps=helps)
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stderr
    assert loaded.splitlines() == [" ".join(args) for args in helps]


def test_every_command_has_help() -> None:
    for name in COMMANDS:
        result = deskpilot(name, "--help")
        assert result.exit_code == 0, f"deskpilot {name} --help failed: {result.stderr}"
        assert "Usage:" in result.stdout


def test_bad_setting_is_a_plain_error_not_a_traceback() -> None:
    import os

    result = deskpilot("desktopd", "--help", env={**os.environ, "DESKPILOT_SCREEN_WIDTH": "wide"})
    assert result.exit_code != 0
    assert "DESKPILOT_SCREEN_WIDTH" in result.stderr
    assert "Traceback" not in result.stderr
