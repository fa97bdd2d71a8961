"""One supervised OS process: spawned in its own process group, watched through a pidfd.

A pidfd becomes readable the moment its process exits (becomes a zombie), so Phoenix
learns of a death within a millisecond from the exit itself, with no polling and no
thread per child (MEASURED.md: ~0.9 ms against ~2.9 ms for Python 3.11's default child
watcher). The same mechanism watches a process Phoenix did not spawn this time (an
adopted one after a restart). Stopping signals the whole group, so a service's own
children stop with it; after the leader exits, stragglers in the group are killed so
nothing is orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

from phoenix_server.domain.errors import (
    RESOURCE_ERRNOS,
    PlatformError,
    ProcessStartError,
    ResourceExhaustedError,
)
from phoenix_server.domain.services import Resources
from phoenix_server.support import procinfo

ExitCallback = Callable[["Process"], None]


class Process:
    """A process group led by ``pid``; ``exited`` resolves with its exit status."""

    def __init__(
        self,
        pid: int,
        *,
        popen: subprocess.Popen[bytes] | None,
        on_exit: ExitCallback,
    ) -> None:
        self.pid = pid
        self.pgid = pid  # started with setsid(): the leader's pid names the group
        self._popen = popen
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int | None] = self._loop.create_future()
        self.start_time = procinfo.start_time(pid)
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            self._pidfd = None
            self._loop.call_soon(self._handle_exit)
            return
        except OSError as exc:
            # Out of descriptors, or a seccomp profile without pidfd_open: a process Phoenix
            # cannot watch must not run unsupervised.
            self.signal_group(signal.SIGKILL)
            if popen is not None:
                popen.wait()
            raise PlatformError(f"cannot watch process {pid}: {exc.strerror or exc}") from None
        self._loop.add_reader(self._pidfd, self._handle_exit)

    @property
    def returncode(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    def _handle_exit(self) -> None:
        if self.exited.done():
            return
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        # Kill what the leader left behind in its group while its zombie still pins the
        # group id (no other process can have taken it), then reap the zombie we own.
        self.signal_group(signal.SIGKILL)
        code: int | None = None
        if self._popen is not None:
            code = self._popen.poll()
        self.exited.set_result(code)
        self._on_exit(self)

    def signal_group(self, signum: int) -> bool:
        """Send ``signum`` to the whole group; False if the group no longer exists."""
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        return True

    async def stop(self, signum: int, grace: float) -> tuple[int | None, bool]:
        """Signal the group, wait ``grace`` seconds, then SIGKILL. Returns (status, forced)."""
        if self.exited.done():
            return self.exited.result(), False
        self.signal_group(signum)
        try:
            async with asyncio.timeout(grace):
                return await asyncio.shield(self.exited), False
        except TimeoutError:
            pass
        self.signal_group(signal.SIGKILL)
        try:
            async with asyncio.timeout(10.0):
                return await asyncio.shield(self.exited), True
        except TimeoutError:
            raise PlatformError(
                f"process {self.pid} did not exit 10 s after SIGKILL (uninterruptible sleep?)"
            ) from None

    def close(self) -> None:
        """Stop watching without touching the process (it keeps running, to be adopted)."""
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._popen is not None:
            # Phoenix will not reap it any more; tell Popen so it does not warn at exit.
            self._popen.returncode = self._popen.returncode or 0
        if not self.exited.done():
            self.exited.cancel()


def spawn(
    argv: Sequence[str],
    *,
    cwd: str | None,
    env: Mapping[str, str],
    log_path: Path,
    on_exit: ExitCallback,
) -> Process:
    """Start ``argv`` in a new session, stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
    except FileNotFoundError:
        where = f" (working directory {cwd})" if cwd else ""
        raise ProcessStartError(f"command not found: {argv[0]!r}{where}") from None
    except NotADirectoryError:
        raise ProcessStartError(f"working directory is not a directory: {cwd}") from None
    except PermissionError as exc:
        raise ProcessStartError(f"permission denied starting {argv[0]!r}: {exc}") from None
    except OSError as exc:
        if exc.errno in RESOURCE_ERRNOS:
            # Out of descriptors or processes for now: not this service's fault, and the
            # recovery waits and tries again without spending an attempt.
            raise ResourceExhaustedError(
                f"cannot start {argv[0]!r} for now: {exc.strerror or exc}"
            ) from None
        raise ProcessStartError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
    return Process(popen.pid, popen=popen, on_exit=on_exit)


def adopt(pid: int, *, on_exit: ExitCallback) -> Process:
    """Watch a process Phoenix did not spawn (left running by a previous Phoenix)."""
    return Process(pid, popen=None, on_exit=on_exit)


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def stop_group(pgid: int, grace: float) -> None:
    """SIGTERM a process group Phoenix does not manage, SIGKILL what is left after ``grace``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = asyncio.get_running_loop().time() + grace
    while group_alive(pgid) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def marked_processes(owner_env: str, owner: str, instance_env: str) -> list[tuple[int, str]]:
    """(pid, instance id) of processes whose environment has ``owner_env=owner``: the
    instances this installation started and their children, wherever they are now."""
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            environ = process.environ()
        except (psutil.Error, OSError):
            continue  # gone meanwhile, or not ours to read: not one of our instances
        if environ.get(owner_env) == owner:
            found.append((process.pid, environ.get(instance_env, "")))
    return found


def instance_of(pid: int, instance_env: str) -> str | None:
    """The instance id in ``pid``'s environment (None if unreadable)."""
    try:
        return psutil.Process(pid).environ().get(instance_env)
    except (psutil.Error, OSError):
        return None


def apply_resources(pid: int, resources: Resources) -> list[str]:
    """Set ``resources`` on the running process ``pid`` (its later children inherit them);
    return what was set, in words. Raises PlatformError naming what could not be set."""
    done: list[str] = []
    try:
        if resources.nice is not None:
            os.setpriority(os.PRIO_PROCESS, pid, resources.nice)
            done.append(f"nice {resources.nice}")
        if resources.cpus is not None:
            os.sched_setaffinity(pid, resources.cpus)
            done.append(f"cpus {','.join(map(str, resources.cpus))}")
        if resources.memory_max is not None:
            limit = resources.memory_max
            resource.prlimit(pid, resource.RLIMIT_DATA, (limit, limit))
            done.append(f"memory_max {limit // (1024 * 1024)} MiB")
        if resources.open_files is not None:
            limit = resources.open_files
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
            done.append(f"open_files {limit}")
    except ProcessLookupError:
        raise PlatformError(f"process {pid} ended before its resources could be set") from None
    except (PermissionError, OSError, ValueError) as exc:
        already = f" (set: {', '.join(done)})" if done else ""
        raise PlatformError(
            f"cannot set the resources of process {pid}: {exc}{already}; lowering nice below "
            "0 or raising a hard limit needs privileges"
        ) from None
    return done
