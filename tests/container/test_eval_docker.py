"""``deskpilot eval --backend docker``: the built-in suite's oracle on real desktop containers with the default,
hardened network (``none``): the harness's pages reach the containerized browser only through the session's
egress proxy, setup and getters go through the daemon, and every run still scores."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from deskpilot.settings import Settings
from evaluation.harness import EvalOptions, Harness
from evaluation.tasks import load_suite
from tests.container.conftest import IMAGE
from tests.evaluation.oracle import ScriptedAgent
from tests.support.fake_messages import FakeMessages

pytestmark = pytest.mark.docker

EVALS = Path(__file__).resolve().parents[2] / "evals"
# A page and its navigation, a download opened in the browser, bash, the editor: each path out of the harness.
TASKS = "nav-kettle,download-total,bash-hello,editor-port"


def test_the_oracle_passes_on_docker_desktops_without_a_network(engine: Any, run_root: Path) -> None:
    suite = load_suite(EVALS, TASKS)
    with FakeMessages() as fake:
        ScriptedAgent(suite, "oracle").install(fake, 40 * len(suite.tasks))
        settings = Settings(data_dir=run_root / "unused", anthropic_api_key=SecretStr("sk-test"),
                            anthropic_base_url=fake.url, model="claude-opus-4-5", thinking_budget_tokens=0,
                            docker_image=IMAGE, docker_warm_pool=0, desktop_start_timeout_s=90)
        assert settings.docker_network == "none"  # the default: what users get
        options = EvalOptions(parallel=2, backend="docker", timeout_s=240, export=False)
        data = asyncio.run(Harness(settings, suite, run_root / "out", options, lambda line: None).run()).data
        assert not fake.errors, fake.errors
    failed = [(r["key"], r["error"], r["checks"]) for r in data["runs"] if not r["success"]]
    assert not failed, failed
    assert sorted(r["task_id"] for r in data["runs"]) == sorted(TASKS.split(","))
