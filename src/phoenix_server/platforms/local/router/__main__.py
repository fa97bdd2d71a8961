"""``python -m phoenix_server.platforms.local.router --service S --listen H:P --control SOCK
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

from phoenix_server.platforms.local.router.control import control_app, load_state
from phoenix_server.platforms.local.router.proxy import Router, client_factory

DRAIN_ON_EXIT = 5.0


async def serve(service: str, host: str, port: int, control: Path, state: Path) -> None:
    loop = asyncio.get_running_loop()
    router = Router(load_state(state, service))
    server = await loop.create_server(
        client_factory(router), host, port, reuse_address=True, backlog=2048
    )
    control.unlink(missing_ok=True)
    runner = web.AppRunner(control_app(router, state), access_log=None, handle_signals=False)
    await runner.setup()
    await web.UnixSite(runner, str(control)).start()
    control.chmod(0o600)
    print(f"router {service} on {host}:{port}, control {control}", flush=True)

    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    server.close()
    for client in list(router.clients):
        if not client.busy:
            client.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_ON_EXIT):
            while router.in_flight:
                await asyncio.sleep(0.02)
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m phoenix_server.platforms.local.router")
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
