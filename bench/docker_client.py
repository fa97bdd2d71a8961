"""Which Docker client the Docker platform uses: aiodocker (native asyncio, on the aiohttp
already in the tree) or the official ``docker`` SDK (blocking, so called in a thread).

Measured side by side in one run, on a real engine, with the same small image (busybox
``FROM scratch``): the cost of one ``inspect``, one ``start`` and one ``stop`` of an existing
container, and the event latency — from ``docker kill`` (the CLI, as an outside killer would)
to the client seeing the container's ``die`` event on its event stream. Medians of
``ROUNDS`` rounds; the machine is shared, so the ratio matters more than the figure.

Run: ``python -m bench docker_client`` (needs a Docker engine: ``DOCKER_HOST`` or
/var/run/docker.sock).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import aiodocker
import docker

from bench.docker_images import busybox_image

ROUNDS = 20
LABEL = "phoenix.bench"


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


async def _aiodocker_figures(image: str) -> dict[str, float]:
    client = aiodocker.Docker()
    try:
        container = await client.containers.create(
            {
                "Image": image,
                "Cmd": ["sleep", "3600"],
                "Labels": {LABEL: "aiodocker"},
                "HostConfig": {"NetworkMode": "host"},
            },
            name="phoenix-bench-aiodocker",
        )
        await container.start()
        inspect, stop, start, events = [], [], [], []
        for _ in range(ROUNDS):
            began = time.perf_counter()
            await container.show()
            inspect.append(time.perf_counter() - began)
        for _ in range(ROUNDS):
            began = time.perf_counter()
            await container.stop(t=0)
            stop.append(time.perf_counter() - began)
            began = time.perf_counter()
            await container.start()
            start.append(time.perf_counter() - began)
        subscriber = client.events.subscribe(
            filters={"label": [f"{LABEL}=aiodocker"], "event": ["die"]}
        )
        for _ in range(ROUNDS):
            await asyncio.sleep(0.05)
            began = time.perf_counter()
            await asyncio.to_thread(_kill_with_cli, container.id)
            while True:
                event = await subscriber.get()
                if event is not None and event.get("Action") == "die":
                    break
            events.append(time.perf_counter() - began)
            await container.start()
        await container.delete(force=True)
    finally:
        await client.close()
    return {
        "inspect": _median_ms(inspect),
        "stop": _median_ms(stop),
        "start": _median_ms(start),
        "kill_to_event": _median_ms(events),
    }


def _sdk_figures(image: str) -> dict[str, float]:
    client = docker.from_env()
    try:
        container = client.containers.create(
            image,
            ["sleep", "3600"],
            labels={LABEL: "sdk"},
            network_mode="host",
            name="phoenix-bench-sdk",
        )
        container.start()

        def timed(call: Callable[[], Any]) -> float:
            # As Phoenix would call it: in a thread, from the event loop.
            async def once() -> float:
                began = time.perf_counter()
                await asyncio.to_thread(call)
                return time.perf_counter() - began

            return asyncio.run(once())

        inspect = [timed(container.reload) for _ in range(ROUNDS)]
        stop, start = [], []
        for _ in range(ROUNDS):
            stop.append(timed(lambda: container.stop(timeout=0)))
            start.append(timed(container.start))
        events: list[float] = []
        seen = threading.Event()
        stream = client.events(decode=True, filters={"label": f"{LABEL}=sdk", "event": "die"})

        def watch() -> None:
            for event in stream:
                if event.get("Action") == "die":
                    seen.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        for _ in range(ROUNDS):
            time.sleep(0.05)
            seen.clear()
            began = time.perf_counter()
            _kill_with_cli(container.id)
            seen.wait(10)
            events.append(time.perf_counter() - began)
            container.start()
        stream.close()
        container.remove(force=True)
    finally:
        client.close()
    return {
        "inspect": _median_ms(inspect),
        "stop": _median_ms(stop),
        "start": _median_ms(start),
        "kill_to_event": _median_ms(events),
    }


def _kill_with_cli(container_id: str) -> None:
    subprocess.run(["docker", "kill", container_id], check=True, capture_output=True)


def main(argv: list[str]) -> None:
    image = busybox_image()
    native = asyncio.run(_aiodocker_figures(image))
    threaded = _sdk_figures(image)
    print(f"{'operation (median ms)':<24}{'aiodocker':>12}{'docker SDK':>12}{'ratio':>8}")
    for key in ("inspect", "start", "stop", "kill_to_event"):
        ratio = native[key] / threaded[key] if threaded[key] else float("nan")
        print(f"{key:<24}{native[key]:>12.2f}{threaded[key]:>12.2f}{ratio:>8.2f}")
    with contextlib.suppress(Exception):
        subprocess.run(
            ["docker", "rm", "-f", "phoenix-bench-aiodocker", "phoenix-bench-sdk"],
            capture_output=True,
        )


if __name__ == "__main__":
    main([])
