"""Loopback addresses for one fake cluster's node, pods and services.

Linux routes all of 127.0.0.0/8 to ``lo``, so every 127.x.y.z is a real address a process can
bind and connect to. Each cluster takes its own 127.N.0.0/16 (N picked at random, checked
free in this process and bindable), so several clusters in one process never clash:
pods get 127.N.1.1 upwards, services 127.N.240.1 upwards, the node is 127.N.0.1.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

_TAKEN: set[int] = set()
_POD_BLOCKS = range(1, 240)
_SERVICE_BLOCKS = range(240, 255)


def _bindable(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def _hosts(blocks: range, octet: int) -> Iterator[str]:
    for third in blocks:
        for fourth in range(1, 255):
            yield f"127.{octet}.{third}.{fourth}"


class LoopbackNetwork:
    def __init__(self) -> None:
        candidates = [n for n in range(2, 255) if n not in _TAKEN]
        random.shuffle(candidates)
        for octet in candidates:
            if _bindable(f"127.{octet}.0.1"):
                break
        else:
            raise RuntimeError("no free 127.N.0.0/16 block for a fake cluster")
        _TAKEN.add(octet)
        self.octet = octet
        self.node_ip = f"127.{octet}.0.1"
        self._pods = _hosts(_POD_BLOCKS, octet)
        self._services = _hosts(_SERVICE_BLOCKS, octet)

    def pod_ip(self) -> str:
        """A fresh pod IP (never reused within a cluster, so a stale IP reaches nothing)."""
        return next(self._pods)

    def service_ip(self) -> str:
        return next(self._services)

    def release(self) -> None:
        _TAKEN.discard(self.octet)
