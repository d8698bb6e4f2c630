from __future__ import annotations

import subprocess
import sys

from deskpilot.cli import COMMANDS


def test_help_lists_every_command_without_importing_them() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "deskpilot.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in COMMANDS:
        assert name in out


def test_every_command_has_help() -> None:
    for name in COMMANDS:
        proc = subprocess.run(
            [sys.executable, "-m", "deskpilot.cli", name, "--help"], capture_output=True, text=True
        )
        assert proc.returncode == 0, f"deskpilot {name} --help failed: {proc.stderr}"
        assert "Usage:" in proc.stdout


def test_bad_setting_is_a_plain_error_not_a_traceback() -> None:
    import os

    env = {**os.environ, "DESKPILOT_SCREEN_WIDTH": "wide"}
    proc = subprocess.run(
        [sys.executable, "-m", "deskpilot.cli", "desktopd", "--help"], capture_output=True, text=True, env=env
    )
    assert proc.returncode != 0
    assert "DESKPILOT_SCREEN_WIDTH" in proc.stderr
    assert "Traceback" not in proc.stderr
