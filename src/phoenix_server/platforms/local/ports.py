"""Ports for instances behind a router: asked of the kernel, never handed out twice."""

from __future__ import annotations

import socket


class PortAllocator:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._held: set[int] = set()

    def allocate(self) -> int:
        """A port free right now and not given to another instance of this Phoenix."""
        for _ in range(100):
            with socket.socket() as probe:
                probe.bind((self._host, 0))
                port: int = probe.getsockname()[1]
            if port not in self._held:
                self._held.add(port)
                return port
        raise OSError("no free port found after 100 tries")

    def hold(self, port: int) -> None:
        """An adopted instance's port: not to be handed out again while it lives."""
        self._held.add(port)

    def release(self, port: int | None) -> None:
        if port is not None:
            self._held.discard(port)
