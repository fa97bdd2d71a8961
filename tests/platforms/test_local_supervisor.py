"""The local platform against real processes: spawn, notice death, stop, adopt, clean up."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from phoenix_server.domain.clock import SystemClock
from phoenix_server.domain.errors import ProcessStartError
from phoenix_server.domain.services import InstanceState
from phoenix_server.platforms.base import InstanceEventKind
from phoenix_server.platforms.local.supervisor import OWNER_ENV, LocalPlatform
from phoenix_server.store.database import Store
from phoenix_server.store.recording import StoreJournal
from phoenix_server.support import procinfo
from tests.platforms.local import OWNER, Recorder, spec_of
from tests.support import eventually, free_port

pytestmark = pytest.mark.e2e  # starts real processes


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'phoenix.db'}")
    store.migrate()
    yield store
    store.close()


def make_platform(
    tmp_path: Path, store: Store, owner: str = OWNER
) -> tuple[LocalPlatform, Recorder]:
    platform = LocalPlatform(
        log_dir=tmp_path / "logs",
        run_dir=tmp_path / "run",
        journal=StoreJournal(store),
        clock=SystemClock(),
        owner=owner,
    )
    recorder = Recorder()
    platform.subscribe(recorder)
    return platform, recorder


@pytest.fixture
async def platform(tmp_path: Path, store: Store) -> AsyncIterator[tuple[LocalPlatform, Recorder]]:
    platform, recorder = make_platform(tmp_path, store)
    yield platform, recorder
    await platform.shutdown(keep_running=False)


SLEEPER = """
- name: sleeper
  command: ["{python}", "-c", "import os,time; print('hello', os.environ['PHOENIX_INSTANCE'], os.environ.get('PORT'), flush=True); time.sleep(600)"]
  health: {process: true}
  stop: {grace: 2s}
"""


async def test_start_runs_a_process_group_logging_to_a_file(
    tmp_path: Path, platform: tuple[LocalPlatform, Recorder]
) -> None:
    local, events = platform
    spec = spec_of(tmp_path, SLEEPER)
    [instance] = await local.start(spec)
    assert instance.pid is not None and instance.state is InstanceState.STARTING
    assert os.getpgid(instance.pid) == instance.pid, "the instance leads its own process group"
    assert events.kinds() == [InstanceEventKind.STARTED]
    log = tmp_path / "logs" / "sleeper.log"
    await eventually(lambda: f"hello {instance.id} None" in log.read_text(), message="log line")
    assert "starting " + instance.id in log.read_text(), "Phoenix marks each start in the log"
    assert [i.id for i in local.instances("sleeper")] == [instance.id]


@pytest.mark.parametrize("routed", [True, False])
async def test_placeholders_and_port_reach_the_process(
    tmp_path: Path, platform: tuple[LocalPlatform, Recorder], routed: bool
) -> None:
    """Behind a router an instance gets a port of its own; without one, the service's."""
    local, _ = platform
    port = free_port()
    spec = spec_of(
        tmp_path,
        f"""
        - name: echo
          command: ["{{python}}", "-c", "import os,sys,time; print(sys.argv[1:], os.environ['PORT'], os.environ['GREETING'], flush=True); time.sleep(600)", "{{name}}", "{{port}}", "{{instance}}"]
          port: {port}
          router: {str(routed).lower()}
          env: {{GREETING: "hi-{{name}}"}}
        """,
    )
    [instance] = await local.start(spec)
    assert (instance.port != port) is routed and instance.port is not None
    log = tmp_path / "logs" / "echo.log"
    expected = f"['echo', '{instance.port}', '{instance.id}'] {instance.port} hi-echo"
    await eventually(lambda: expected in log.read_text(), message=expected)
    assert psutil.Process(instance.pid).exe() == os.path.realpath(sys.executable)


async def test_a_killed_process_is_noticed_within_milliseconds(
    tmp_path: Path, platform: tuple[LocalPlatform, Recorder]
) -> None:
    local, events = platform
    [instance] = await local.start(spec_of(tmp_path, SLEEPER))
    assert instance.pid is not None
    killed_at = time.monotonic()
    os.kill(instance.pid, signal.SIGKILL)
    seen = await eventually(lambda: events.first(InstanceEventKind.EXITED), timeout=5)
    noticed_at, event = seen
    assert noticed_at - killed_at < 0.05, f"took {noticed_at - killed_at:.4f}s"
    assert event.instance.exit_code == -signal.SIGKILL
    assert event.instance.state is InstanceState.EXITED
    # A crashed instance stays visible (as exited) until a stop forgets it.
    [kept] = local.instances("sleeper")
    assert kept.state is InstanceState.EXITED
    ended = await local.stop(spec_of(tmp_path, SLEEPER))
    assert [i.id for i in ended] == [instance.id]
    assert local.instances("sleeper") == []
    assert events.kinds()[-1] is InstanceEventKind.STOPPED


async def test_stop_is_graceful_first(
    tmp_path: Path, platform: tuple[LocalPlatform, Recorder]
) -> None:
    local, events = platform
    spec = spec_of(tmp_path, SLEEPER)
    [instance] = await local.start(spec)
    started = time.monotonic()
    [ended] = await local.stop(spec)
    assert time.monotonic() - started < 1.5, "a process that honours SIGTERM stops at once"
    assert ended.state is InstanceState.STOPPED
    assert ended.exit_code == -signal.SIGTERM
    assert instance.pid is not None and not procinfo.is_running(
        instance.pid, instance.process_start
    )
    assert events.kinds() == [InstanceEventKind.STARTED, InstanceEventKind.STOPPED]


async def test_a_process_ignoring_sigterm_is_killed_after_the_grace(
    tmp_path: Path, platform: tuple[LocalPlatform, Recorder]
) -> None:
    local, _ = platform
    spec = spec_of(
        tmp_path,
        """
        - name: stubborn
          command: ["{python}", "-c", "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"]
          stop: {grace: 300ms}
        """,
    )
    [instance] = await local.start(spec)
    log = tmp_path / "logs" / "stubborn.log"
    await eventually(lambda: "ready" in log.read_text().splitlines(), message="handler installed")
    started = time.monotonic()
    [ended] = await local.stop(spec)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2.0
    assert ended.exit_code == -signal.SIGKILL
    assert instance.pid is not None and not procinfo.is_running(instance.pid, None)


TREE = """
- name: tree
  command: ["sh", "-c", "sleep 600 & echo child $! ; wait"]
  stop: {grace: 2s}
"""


def child_pid(log: Path) -> int | None:
    for line in log.read_text().splitlines():
        if line.startswith("child "):
            return int(line.split()[1])
    return None


async def test_stop_takes_the_whole_process_tree(
    tmp_path: Path, platform: tuple[LocalPlatform, Recorder]
) -> None:
    local, _ = platform
    spec = spec_of(tmp_path, TREE)
    await local.start(spec)
    child = await eventually(lambda: child_pid(tmp_path / "logs" / "tree.log"), message="child")
    await local.stop(spec)
    await eventually(lambda: not procinfo.is_running(child, None), timeout=3, message="child gone")


async def test_when_the_leader_dies_its_stragglers_are_killed(
    tmp_path: Path, platform: tuple[LocalPlatform, Recorder]
) -> None:
    local, events = platform
    spec = spec_of(tmp_path, TREE)
    [instance] = await local.start(spec)
    child = await eventually(lambda: child_pid(tmp_path / "logs" / "tree.log"), message="child")
    assert instance.pid is not None
    os.kill(instance.pid, signal.SIGKILL)
    await eventually(lambda: events.first(InstanceEventKind.EXITED), message="exit")
    await eventually(lambda: not procinfo.is_running(child, None), timeout=3, message="orphan gone")


async def test_a_zombie_counts_as_dead() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    await eventually(
        lambda: psutil.Process(process.pid).status() == psutil.STATUS_ZOMBIE, message="zombie"
    )
    try:
        assert not procinfo.is_running(process.pid, None)
    finally:
        process.wait()


async def test_an_unknown_command_is_refused_plainly(
    tmp_path: Path, platform: tuple[LocalPlatform, Recorder]
) -> None:
    local, events = platform
    spec = spec_of(tmp_path, '- name: ghost\n  command: ["no-such-binary-phoenix", "x"]\n')
    with pytest.raises(ProcessStartError, match="command not found: 'no-such-binary-phoenix'"):
        await local.start(spec)
    assert events.events == [] and local.instances("ghost") == []


async def test_wait_for_exit_returns_the_instance_that_ended(
    tmp_path: Path, platform: tuple[LocalPlatform, Recorder]
) -> None:
    local, _ = platform
    spec = spec_of(
        tmp_path, '- name: brief\n  command: ["{python}", "-c", "import time; time.sleep(0.2)"]\n'
    )
    [instance] = await local.start(spec)
    ended = await asyncio.wait_for(local.wait_for_exit([instance.id]), 5)
    assert ended.id == instance.id and ended.exit_code == 0


async def test_a_restarted_phoenix_adopts_what_still_runs(tmp_path: Path, store: Store) -> None:
    spec = spec_of(tmp_path, SLEEPER)
    first, _ = make_platform(tmp_path, store)
    [instance] = await first.start(spec)
    await first.mark_serving(spec, [instance.id])
    await first.shutdown(keep_running=True)
    assert instance.pid is not None and procinfo.is_running(instance.pid, instance.process_start)

    second, events = make_platform(tmp_path, store)
    try:
        await second.reconcile([spec])
        assert events.kinds() == [InstanceEventKind.ADOPTED], "adopted, not restarted"
        [adopted] = second.instances("sleeper")
        assert (adopted.id, adopted.pid) == (instance.id, instance.pid)
        killed_at = time.monotonic()
        os.kill(instance.pid, signal.SIGKILL)
        noticed_at, event = await eventually(lambda: events.first(InstanceEventKind.EXITED))
        assert noticed_at - killed_at < 0.05, "an adopted process is watched through its pidfd too"
        assert event.instance.exit_code is None, "the exit status of a non-child is unknowable"
    finally:
        await second.shutdown(keep_running=False)


async def test_a_changed_declaration_replaces_the_old_instance(
    tmp_path: Path, store: Store
) -> None:
    first, _ = make_platform(tmp_path, store)
    [old] = await first.start(spec_of(tmp_path, SLEEPER))
    await first.shutdown(keep_running=True)

    changed = spec_of(tmp_path, SLEEPER.replace("health: {process: true}", "env: {MODE: new}"))
    second, events = make_platform(tmp_path, store)
    try:
        await second.reconcile([changed])
        assert old.pid is not None
        await eventually(lambda: not procinfo.is_running(old.pid, old.process_start), timeout=5)
        [fresh] = second.instances("sleeper")
        assert fresh.pid != old.pid and events.kinds() == [InstanceEventKind.STARTED]
    finally:
        await second.shutdown(keep_running=False)


async def test_strays_of_this_installation_are_stopped(tmp_path: Path, store: Store) -> None:
    stray = subprocess.Popen(
        ["sleep", "600"], env={**os.environ, OWNER_ENV: OWNER}, start_new_session=True
    )
    unrelated = subprocess.Popen(
        ["sleep", "600"], env={**os.environ, OWNER_ENV: "someone-else"}, start_new_session=True
    )
    local, _ = make_platform(tmp_path, store)
    try:
        await local.reconcile([])
        await eventually(lambda: stray.poll() is not None, timeout=5, message="stray stopped")
        assert unrelated.poll() is None, "another installation's process is left alone"
    finally:
        unrelated.kill()
        unrelated.wait()
        stray.wait()
        await local.shutdown(keep_running=False)


async def test_shutdown_stops_everything_and_empties_the_journal(
    tmp_path: Path, store: Store
) -> None:
    local, _ = make_platform(tmp_path, store)
    spec = spec_of(tmp_path, SLEEPER)
    [instance] = await local.start(spec)
    journal = StoreJournal(store)
    assert [i.id for i in await journal.load_instances(instance.platform)] == [instance.id]
    await local.shutdown(keep_running=False)
    assert instance.pid is not None and not procinfo.is_running(
        instance.pid, instance.process_start
    )
    assert await journal.load_instances(instance.platform) == []


HELPER = """
- name: parent
  command: ["{python}", "-c", "import subprocess, time; h = subprocess.Popen(['sleep', '600'], start_new_session=True); print('helper', h.pid, flush=True); time.sleep(600)"]
  stop: {grace: 2s}
"""


def helper_pid(log: Path) -> int | None:
    for line in log.read_text().splitlines():
        if line.startswith("helper "):
            return int(line.split()[1])
    return None


async def test_adoption_spares_an_adopted_instances_own_helpers(
    tmp_path: Path, store: Store
) -> None:
    """A helper the service started in its own session carries the owner marker too; it is
    part of an adopted instance, not a stray."""
    spec = spec_of(tmp_path, HELPER)
    first, _ = make_platform(tmp_path, store)
    await first.start(spec)
    helper = await eventually(lambda: helper_pid(tmp_path / "logs" / "parent.log"))
    await first.shutdown(keep_running=True)
    second, events = make_platform(tmp_path, store)
    try:
        await second.reconcile([spec])
        assert events.kinds() == [InstanceEventKind.ADOPTED]
        assert procinfo.is_running(helper, None), "the adopted instance's helper survives"
    finally:
        await second.shutdown(keep_running=False)
        os.kill(helper, signal.SIGKILL)


async def test_a_recycled_pid_is_not_adopted(tmp_path: Path, store: Store) -> None:
    """The journal names a pid that now belongs to another process: not ours, not touched."""
    spec = spec_of(tmp_path, SLEEPER)
    first, _ = make_platform(tmp_path, store)
    [instance] = await first.start(spec)
    await first.shutdown(keep_running=False)
    stranger = subprocess.Popen(["sleep", "600"])
    journal = StoreJournal(store)
    await journal.save_instance(
        replace(instance, pid=stranger.pid, process_start=procinfo.start_time(stranger.pid))
    )
    second, events = make_platform(tmp_path, store)
    try:
        await second.reconcile([spec])
        assert events.kinds() == [InstanceEventKind.STARTED], "a fresh instance, no adoption"
        assert stranger.poll() is None, "the stranger is left alone"
    finally:
        await second.shutdown(keep_running=False)
        stranger.kill()
        stranger.wait()


async def test_declared_resources_are_set_on_each_process(
    tmp_path: Path, platform: tuple[LocalPlatform, Recorder]
) -> None:
    local, _ = platform
    cpu = min(os.sched_getaffinity(0))
    spec = spec_of(
        tmp_path,
        SLEEPER + f"  resources: {{nice: 7, cpus: [{cpu}], memory_max: 1GiB, open_files: 512}}\n",
    )
    [instance] = await local.start(spec)
    assert instance.pid is not None
    process = psutil.Process(instance.pid)
    assert process.nice() == 7
    assert process.cpu_affinity() == [cpu]
    assert process.rlimit(psutil.RLIMIT_DATA) == (1024**3, 1024**3)
    assert process.rlimit(psutil.RLIMIT_NOFILE) == (512, 512)
    summary = await local.apply_resources(spec)
    assert summary == f"{instance.id}: nice 7, cpus {cpu}, memory_max 1024 MiB, open_files 512"


async def test_resources_that_cannot_be_set_are_reported_and_the_service_still_runs(
    tmp_path: Path, platform: tuple[LocalPlatform, Recorder]
) -> None:
    local, _ = platform
    # Raising the hard limit of open files beyond the system's maximum is refused.
    spec = spec_of(tmp_path, SLEEPER + "  resources: {open_files: 1048576}\n")
    [instance] = await local.start(spec)
    summary = await local.apply_resources(spec)
    if "cannot set the resources" not in summary:
        pytest.skip("this machine lets the test raise the open-files limit that far")
    assert "needs privileges" in summary
    assert local.instances("sleeper")[0].id == instance.id and instance.pid is not None
    assert psutil.Process(instance.pid).is_running()
