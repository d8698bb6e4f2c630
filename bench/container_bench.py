"""Docker desktops: session start to first screenshot, cold start vs warm pool; memory per idle desktop.

The reference approach (the reference demo, and any backend without a pool) starts a desktop container
when the session starts, so "cold" is the reference and "warm" is ours; the ratio is printed.
Targets: warm ≤ 1 s to the first screenshot; ≥ 20 idle desktops in 24 GiB.

    .venv/bin/python bench/container_bench.py [--rounds 3] [--idle 3] [--network host]

Needs a running engine and the desktop image (``scripts/setup-docker``). ``--network host`` is the
only mode where the engine runs without a bridge (as in CI); a real deployment uses ``bridge``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import docker

from deskpilot.settings import Settings
from desktop.backends.docker import DockerBackend

GIB = 1024**3


async def first_screenshot(backend: DockerBackend, sid: str) -> tuple[float, Any]:
    started = time.perf_counter()
    handle = await backend.acquire(sid, 1024, 768)
    shot = await handle.client.screenshot()
    elapsed = time.perf_counter() - started
    if shot.is_error or not shot.image:
        raise SystemExit(f"screenshot failed: {shot.error}")
    return elapsed, handle


async def cold(settings: Settings, rounds: int) -> list[float]:
    backend = DockerBackend(settings.model_copy(update={"docker_warm_pool": 0}))
    times = []
    try:
        for i in range(rounds):
            elapsed, handle = await first_screenshot(backend, f"bench-cold-{i}")
            times.append(elapsed)
            await backend.release(handle)
    finally:
        await backend.aclose()
    return times


async def warm(settings: Settings, rounds: int) -> list[float]:
    backend = DockerBackend(settings.model_copy(update={"docker_warm_pool": 1}))
    times = []
    try:
        for i in range(rounds):
            await backend.wait_pool_ready()  # a new session arrives while the pool is full
            elapsed, handle = await first_screenshot(backend, f"bench-warm-{i}")
            times.append(elapsed)
            await backend.release(handle)
    finally:
        await backend.aclose()
    return times


def container_memory(engine: Any, container_id: str) -> int:
    """Memory the container's cgroup charges, minus reclaimable file cache (what `docker stats` shows)."""
    stats = engine.containers.get(container_id).stats(stream=False)["memory_stats"]
    inner = stats.get("stats", {})
    cache = inner.get("inactive_file", inner.get("total_inactive_file", 0))
    return int(stats["usage"]) - int(cache)


async def idle_memory(settings: Settings, count: int, settle_s: float) -> list[int]:
    backend = DockerBackend(settings.model_copy(update={"docker_warm_pool": 0}))
    engine = backend.engine()
    try:
        handles = [await backend.acquire(f"bench-idle-{i}", 1024, 768) for i in range(count)]
        for handle in handles:  # a screenshot each, so every desktop has painted and encoded once
            await handle.client.screenshot()
        await asyncio.sleep(settle_s)
        return [container_memory(engine, h.extra["container"]) for h in handles]
    finally:
        await backend.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=int, default=3, help="idle desktops measured for memory")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds idle before measuring memory")
    parser.add_argument("--network", default="host")
    parser.add_argument("--image", default="deskpilot-desktop:latest")
    args = parser.parse_args()
    docker.from_env().images.get(args.image)  # fails early with a clear error when the image is missing
    root = Path(tempfile.mkdtemp(prefix="dpb-", dir="/tmp"))
    settings = Settings(data_dir=root, docker_network=args.network, docker_image=args.image,
                        desktop_start_timeout_s=120)
    try:
        cold_s = await cold(settings, args.rounds)
        warm_s = await warm(settings, args.rounds)
        memory = await idle_memory(settings, args.idle, args.settle)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    c, w = statistics.median(cold_s), statistics.median(warm_s)
    print(f"session start -> first screenshot (median of {args.rounds})")
    print(f"  reference (cold container): {c:6.3f} s   runs: {', '.join(f'{t:.3f}' for t in cold_s)}")
    print(f"  deskpilot (warm pool):      {w:6.3f} s   runs: {', '.join(f'{t:.3f}' for t in warm_s)}")
    print(f"  ratio cold/warm: {c / w:.1f}x   target warm <= 1 s: {'met' if w <= 1.0 else 'NOT met'}")
    per = statistics.mean(memory)
    fit = int(24 * GIB // per)
    print(f"idle desktop container memory: mean {per / 2**20:.0f} MiB "
          f"(each: {', '.join(f'{m / 2**20:.0f}' for m in memory)} MiB)")
    print(f"  idle desktops in 24 GiB: {fit}   target >= 20: {'met' if fit >= 20 else 'NOT met'}")


if __name__ == "__main__":
    asyncio.run(main())
