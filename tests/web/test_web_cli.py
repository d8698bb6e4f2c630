"""``deskpilot token …`` and ``deskpilot serve`` as a user runs them."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx
import pytest
from click.testing import Result

from tests.support.cli import deskpilot as run
from tests.web.procs import ServerProcess


def deskpilot(data: Path, *args: str) -> Result:
    return run(*args, env={**os.environ, "DESKPILOT_DATA_DIR": str(data)})


def test_token_create_list_revoke(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = deskpilot(data, "token", "create", "carol")
    assert made.exit_code == 0, made.stderr
    token = made.stdout.strip()
    assert re.fullmatch(r"dp_[A-Za-z0-9_-]{40,}", token)
    assert "cannot be shown again" in made.stderr
    listed = deskpilot(data, "token", "list")
    assert "carol" in listed.stdout and token not in listed.stdout and "active" in listed.stdout
    assert token not in (data / "deskpilot.db").read_bytes().decode("latin-1")  # stored hashed only
    assert deskpilot(data, "token", "revoke", "carol").exit_code == 0
    assert "revoked" in deskpilot(data, "token", "list").stdout
    missing = deskpilot(data, "token", "revoke", "nobody")
    assert missing.exit_code != 0 and "no active token" in missing.stderr


@pytest.mark.service
def test_first_start_prints_a_token_once_and_runs_without_an_api_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: "" for k in ("ANTHROPIC_API_KEY", "DESKPILOT_ANTHROPIC_API_KEY") if k in os.environ}
    server = ServerProcess(data, env).start()
    try:
        deadline = time.monotonic() + 10
        while "dp_" not in server.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = server.log.read_text()
        assert "the service starts, but model" in log and "ANTHROPIC_API_KEY" in log
        token = re.search(r"dp_[A-Za-z0-9_-]{40,}", log)
        assert token is not None
        me = httpx.get(server.url + "/api/me", headers={"Authorization": f"Bearer {token.group(0)}"})
        assert me.json() == {"owner": "admin"}
        health = httpx.get(server.url + "/healthz").json()
        assert health["tasks_can_run"] is False and "ANTHROPIC_API_KEY" in health["reason"]
    finally:
        server.stop()
    second = ServerProcess(data, env, port=server.port).start()  # the second start creates nothing new
    try:
        assert len(re.findall(r"dp_[A-Za-z0-9_-]{40,}", second.log.read_text())) == 1
    finally:
        second.stop()
