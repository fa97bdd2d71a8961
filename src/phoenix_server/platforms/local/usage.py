"""Memory and CPU of local instances: each is its process and everything it started (a
worker pool, a shell's child), so its memory is the resident set of the whole tree and its
CPU their sum, in percent of one core."""

from __future__ import annotations

import contextlib

import psutil

from phoenix_server.platforms.base import Usage


class ProcessUsage:
    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}
        """Kept between samples: CPU percent is measured since the previous call."""
        self._seen: dict[str, set[int]] = {}
        """The processes each service's last sample looked at (the rest are forgotten)."""

    def sample(self, service: str, pids: list[int]) -> list[Usage]:
        """Usage of each process tree rooted at ``pids`` (one per running instance); trees
        that ended meanwhile are left out."""
        seen: set[int] = set()
        usage = [u for pid in pids if (u := self._measure(pid, seen)) is not None]
        self._seen[service] = seen
        alive = set().union(*self._seen.values())
        for pid in set(self._processes) - alive:
            del self._processes[pid]  # ended: never let the cache grow
        return usage

    def _measure(self, pid: int, seen: set[int]) -> Usage | None:
        try:
            root = self._process(pid, seen)
            tree = [root, *root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        memory = cpu = 0.0
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                cached = self._process(process.pid, seen)
                with cached.oneshot():
                    memory += cached.memory_info().rss
                    cpu += cached.cpu_percent(None)
        return Usage(memory=memory, cpu=cpu)

    def _process(self, pid: int, seen: set[int]) -> psutil.Process:
        seen.add(pid)
        process = self._processes.get(pid)
        if process is None or not process.is_running():
            process = self._processes[pid] = psutil.Process(pid)
            process.cpu_percent(None)  # the first call only starts the measurement
        return process
