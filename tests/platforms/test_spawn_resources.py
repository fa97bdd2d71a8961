"""Running out of descriptors or processes when starting an instance is transient: it is
reported as such (the recovery waits and retries it without spending an attempt), while a
start that can never work (no such command) stays a start failure."""

from __future__ import annotations

import errno
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from phoenix_server.domain.errors import ProcessStartError, ResourceExhaustedError
from phoenix_server.platforms import processes


def _spawn(tmp_path: Path) -> processes.Process:
    return processes.spawn(
        [sys.executable, "-c", "pass"],
        cwd=str(tmp_path),
        env={},
        log_path=tmp_path / "out.log",
        on_exit=lambda process: None,
    )


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM])
def test_a_start_refused_for_want_of_resources_is_transient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise OSError(code, "refused for the test")

    monkeypatch.setattr(subprocess, "Popen", refused)
    with pytest.raises(ResourceExhaustedError, match="for now: refused for the test"):
        _spawn(tmp_path)


def test_a_start_with_no_descriptor_left_is_transient(tmp_path: Path) -> None:
    """The real thing: the descriptor limit lowered to what is open now, so the log file
    (or the pipe Popen needs) cannot be opened."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    script = f"""
import resource, sys
sys.path[:0] = {sys.path!r}
from pathlib import Path
from phoenix_server.domain.errors import ResourceExhaustedError
from phoenix_server.platforms import processes
import os
opened = len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (opened, {hard}))
try:
    processes.spawn([sys.executable, "-c", "pass"], cwd=None, env={{}},
                    log_path=Path({str(tmp_path / "out.log")!r}), on_exit=lambda p: None)
except ResourceExhaustedError as exc:
    print("transient:", exc.message)
except Exception as exc:
    print("other:", type(exc).__name__, exc)
"""
    del soft
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.stdout.startswith("transient:"), done.stdout + done.stderr


def test_a_missing_command_is_still_a_start_failure(tmp_path: Path) -> None:
    with pytest.raises(ProcessStartError):
        processes.spawn(
            ["no-such-binary-phoenix-test"],
            cwd=str(tmp_path),
            env={},
            log_path=tmp_path / "out.log",
            on_exit=lambda process: None,
        )
