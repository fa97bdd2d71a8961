"""``python -m phoenix_server.platforms.router --service S --listen H:P --control SOCK
--state FILE``: serve until SIGTERM, then stop accepting and let requests in flight finish."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import uvloop
from aiohttp import web

from phoenix_server.platforms.router.control import control_app, load_state
from phoenix_server.platforms.router.proxy import Router, client_factory

DRAIN_ON_EXIT = 5.0
CONTROL_CHECK = 0.5
"""Seconds between looks at the control socket's path (see :func:`keep_control_socket`)."""


async def serve(service: str, host: str, port: int, control: Path, state: Path) -> None:
    loop = asyncio.get_running_loop()
    router = Router(load_state(state, service))
    server = await loop.create_server(
        client_factory(router), host, port, reuse_address=True, backlog=2048
    )
    control.unlink(missing_ok=True)
    runner = web.AppRunner(control_app(router, state), access_log=None, handle_signals=False)
    await runner.setup()
    await open_control_socket(runner, control)
    print(f"router {service} on {host}:{port}, control {control}", flush=True)

    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    keeper = asyncio.create_task(keep_control_socket(runner, control, stopping))
    await stopping.wait()
    keeper.cancel()
    server.close()
    for client in list(router.clients):
        if not client.busy:
            client.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_ON_EXIT):
            while router.in_flight:
                await asyncio.sleep(0.02)
    await runner.cleanup()


async def open_control_socket(runner: web.AppRunner, control: Path) -> None:
    control.parent.mkdir(parents=True, exist_ok=True)
    await web.UnixSite(runner, str(control)).start()
    control.chmod(0o600)


async def keep_control_socket(
    runner: web.AppRunner, control: Path, stopping: asyncio.Event
) -> None:
    """Listen on ``control`` again if its path goes (Phoenix's run directory deleted while
    it runs): clients keep being served either way, but Phoenix could no longer reach the
    router to move traffic to a new instance."""
    while not stopping.is_set():
        await asyncio.sleep(CONTROL_CHECK)
        if control.exists():
            continue
        try:
            await open_control_socket(runner, control)
        except OSError as exc:
            print(f"router: cannot listen on {control} again: {exc.strerror}", file=sys.stderr)
        else:
            print(f"router: control socket {control} was deleted; listening again", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m phoenix_server.platforms.router")
    parser.add_argument("--service", required=True)
    parser.add_argument("--listen", required=True, help="host:port clients connect to")
    parser.add_argument("--control", required=True, type=Path, help="Unix socket for Phoenix")
    parser.add_argument("--state", required=True, type=Path, help="last configuration (JSON)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    try:
        uvloop.run(serve(args.service, host or "127.0.0.1", int(port), args.control, args.state))
    except OSError as exc:
        print(
            f"router {args.service}: cannot listen on {args.listen}: {exc.strerror}",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
