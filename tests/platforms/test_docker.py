"""The Docker platform end to end on a real engine: containers Phoenix creates, a container
killed from outside noticed from the engine's events and restarted (recorded step by
step), adoption of its running containers by a restarted Phoenix, and refusals that say
what is missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import psutil
import pytest
from bench.docker_images import busybox_image

from phoenix_server.detection.health_tracking import ServiceHealthView
from phoenix_server.detection.signals import CPU, MEMORY
from phoenix_server.domain.errors import UnsupportedStrategyError
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.incidents import Incident, IncidentStatus
from phoenix_server.domain.recoveries import (
    Recovery,
    RecoveryStatus,
    RecoveryTrigger,
    StepStatus,
    Strategy,
)
from phoenix_server.domain.services import InstanceState
from phoenix_server.platforms.base import InstanceEvent, InstanceEventKind
from phoenix_server.runtime import Runtime
from phoenix_server.store import incidents
from tests.recovery.engine import engine, finished, healthy, history
from tests.support import LoopbackHTTPServer, eventually, free_port

pytestmark = pytest.mark.e2e  # starts real containers


def busybox_in(container: str, *argv: str, root: bool = False) -> None:
    """Run a busybox applet inside a running container (as root with ``root``)."""
    user = ("-u", "0") if root else ()
    subprocess.run(
        ["docker", "exec", *user, container, "/bin/busybox", *argv],
        check=True,
        capture_output=True,
    )


async def its_recovery(runtime: Runtime, service: str, timeout: float = 20) -> Recovery:
    """The service's one recovery, once it has ended."""
    [started] = await eventually(
        lambda: history(runtime, service=service), timeout=timeout, message="recovery"
    )
    return await finished(runtime, started.id)


def web(image: str, port: int) -> str:
    return f"""
  - name: web
    platform: docker
    image: {image}
    command: [httpd, -f, -p, "127.0.0.1:{{port}}", -h, /www]
    port: {port}
    health:
      http: "http://127.0.0.1:{{port}}/health"
      interval: 200ms
      timeout: 1s
      failure_threshold: 2
    stop: {{grace: 1s}}
"""


async def test_a_container_killed_from_outside_is_restarted(
    tmp_path: Path, docker_image: str
) -> None:
    port = free_port()
    async with engine(tmp_path, web(docker_image, port)) as runtime:
        assert runtime.docker is not None
        await healthy(runtime, "web")
        [before] = runtime.docker.instances("web")
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        subprocess.run(["docker", "kill", before.id], check=True, capture_output=True)
        recovery = await its_recovery(runtime, "web", timeout=10)
        assert recovery.status is RecoveryStatus.COMPLETED, recovery
        assert recovery.trigger is RecoveryTrigger.AUTOMATIC
        assert recovery.strategy is Strategy.RESTART
        assert [s.status for s in recovery.steps] == [StepStatus.COMPLETED] * 4
        assert "exited with code 137" in (recovery.steps[0].detail or "")
        [after] = runtime.docker.instances("web")
        assert after.id != before.id and after.state is InstanceState.RUNNING
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200


async def test_a_hung_container_is_replaced_and_its_shutdown_is_still_graceful(
    tmp_path: Path, docker_image: str
) -> None:
    """The server in the container is SIGSTOPped: it still runs but answers nothing.
    Phoenix's probes fail, the restart stops it — letting it run again first, so that it
    takes the SIGTERM Docker's init passes on (exit 143) rather than waiting out its 30 s
    grace for a SIGKILL (137) — and a fresh container serves."""
    port = free_port()
    services = web(docker_image, port).replace("grace: 1s", "grace: 30s") + "    init: true\n"
    async with engine(tmp_path, services) as runtime:
        assert runtime.docker is not None
        ended: list[InstanceEvent] = []
        runtime.docker.subscribe(
            lambda e: ended.append(e) if e.kind is InstanceEventKind.STOPPED else None
        )
        await healthy(runtime, "web")
        [before] = runtime.docker.instances("web")
        assert before.pid is not None
        [server] = psutil.Process(before.pid).children()  # httpd, under Docker's init
        server.suspend()  # SIGSTOP
        recovery = await its_recovery(runtime, "web", timeout=10)
        assert recovery.status is RecoveryStatus.COMPLETED, recovery
        assert recovery.strategy is Strategy.RESTART
        [stopped] = [e.instance for e in ended if e.instance.id == before.id]
        assert stopped.exit_code == 128 + signal.SIGTERM, "it took the SIGTERM, not a SIGKILL"
        [after] = runtime.docker.instances("web")
        assert after.id != before.id
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200


async def test_a_restarted_phoenix_adopts_its_running_container(
    tmp_path: Path, docker_image: str
) -> None:
    port = free_port()
    services = web(docker_image, port)
    async with engine(tmp_path, services, PHOENIX_KEEP_SERVICES="true") as runtime:
        assert runtime.docker is not None
        await healthy(runtime, "web")
        [first] = runtime.docker.instances("web")
    # Phoenix is gone; the container serves on.
    assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    async with engine(tmp_path, services) as runtime:
        assert runtime.docker is not None
        [adopted] = runtime.docker.instances("web")
        assert adopted.id == first.id, "adopted, not started again"
        await healthy(runtime, "web")
        assert await history(runtime, service="web") == []


async def test_what_a_docker_service_lacks_for_a_strategy_is_the_reason_it_is_refused(
    tmp_path: Path, docker_image: str
) -> None:
    port = free_port()
    async with engine(tmp_path, web(docker_image, port)) as runtime:
        await healthy(runtime, "web")
        with pytest.raises(UnsupportedStrategyError, match="declares no backup"):
            await runtime.orchestrator.trigger(
                service="web", strategy=Strategy.FAILOVER, reason="test", force=False
            )
        with pytest.raises(UnsupportedStrategyError, match=r"its declared maximum \(replicas.max"):
            await runtime.orchestrator.trigger(
                service="web", strategy=Strategy.SCALE, reason="test", force=False
            )


async def test_an_image_that_does_not_exist_is_a_start_failure_naming_it(
    tmp_path: Path, docker_image: str
) -> None:
    missing = web("phoenix-test/no-such-image:1", free_port())
    async with engine(tmp_path, missing) as runtime:
        view = await eventually(
            lambda: (v := runtime.tracker.view("web")).reason and v, message="a reason"
        )
        assert "could not start" in view.reason and "no-such-image" in view.reason


async def test_container_memory_and_cpu_feed_the_services_signals(
    tmp_path: Path, docker_image: str
) -> None:
    async with engine(tmp_path, web(docker_image, free_port())) as runtime:
        await healthy(runtime, "web")

        def sampled() -> float | None:
            series = runtime.tracker.signals("web").series.get(MEMORY)
            latest = series.latest() if series is not None else None
            return latest.value if latest is not None and latest.value > 0 else None

        memory = await eventually(sampled, timeout=15, message="a memory sample")
        assert 10_000 < memory < 200 * 1024 * 1024, memory  # busybox httpd: tens of KiB+
        assert runtime.tracker.signals("web").series.get(CPU) is not None


HEALTHCHECK = (
    '--interval=200ms --timeout=1s --retries=2 CMD ["/bin/busybox", "test", "-f", "/www/ready"]'
)


async def test_an_unhealthy_healthcheck_is_recovered_though_phoenixs_probe_passes(
    tmp_path: Path, docker_image: str
) -> None:
    """The image's HEALTHCHECK fails (its /www/ready is gone) while the port still answers
    Phoenix's own probe: Docker marks it unhealthy and does nothing more; Phoenix takes the
    verdict and replaces the container."""
    image = busybox_image(healthcheck=HEALTHCHECK)
    async with engine(tmp_path, web(image, free_port())) as runtime:
        assert runtime.docker is not None
        await healthy(runtime, "web")
        [before] = runtime.docker.instances("web")
        busybox_in(before.id, "rm", "/www/ready")
        recovery = await its_recovery(runtime, "web")
        assert recovery.status is RecoveryStatus.COMPLETED, recovery
        assert "Docker's HEALTHCHECK says unhealthy" in recovery.reason
        [after] = runtime.docker.instances("web")
        assert after.id != before.id
        await healthy(runtime, "web")


async def test_an_unreachable_engine_is_named_where_an_operator_looks(tmp_path: Path) -> None:
    """DOCKER_HOST names a socket nothing listens on: the service could not start and says
    why (the engine and its address), and /health names the event watch that cannot run;
    Phoenix itself stays up."""
    nowhere = f"unix://{tmp_path}/no-engine.sock"
    services = web("phoenix-test/anything:1", free_port())
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = nowhere
    try:
        async with engine(tmp_path, services) as runtime:
            view = await eventually(
                lambda: (v := runtime.tracker.view("web")).reason and v, message="a reason"
            )
            assert "cannot reach the Docker engine at " + nowhere in view.reason
            deaths = await eventually(runtime.task_deaths, timeout=10, message="a task death")
            assert any("docker-events" in death for death in deaths), deaths
    finally:
        if old is None:
            del os.environ["DOCKER_HOST"]
        else:
            os.environ["DOCKER_HOST"] = old


async def test_a_container_that_dies_right_after_it_starts_is_given_up_on_cleanly(
    tmp_path: Path, docker_image: str
) -> None:
    """Every container exits 0.3 s after it starts: each attempt fails (the relapse inside
    the stabilisation period), the crash-loop backoff applies, Phoenix gives up after
    MAX_RECOVERY_ATTEMPTS with the incident unresolved, and no container is left over
    beside the one the service is supposed to have."""
    services = f"""
  - name: crasher
    platform: docker
    image: {docker_image}
    command: [sh, -c, "sleep 0.3; exit 3"]
    health: {{process: true, interval: 100ms}}
    recovery: {{backoff: {{initial: 200ms, max: 400ms, reset_after: 10s}}, stabilisation: 1s}}
    stop: {{grace: 1s}}
"""
    async with engine(tmp_path, services, MAX_RECOVERY_ATTEMPTS="3") as runtime:
        assert runtime.docker is not None

        def gave_up() -> str | None:
            found = runtime.orchestrator.unresolved_incidents()
            done = [i for i in found if i.status is IncidentStatus.UNRESOLVED]
            return done[0].id if done else None

        await eventually(gave_up, timeout=40, message="Phoenix gave up")
        attempts = await history(runtime, service="crasher")
        assert len(attempts) == 3 and all(r.status.terminal for r in attempts)
        assert all(r.status is not RecoveryStatus.COMPLETED for r in attempts), attempts
        assert len(runtime.docker.instances("crasher")) <= 1


def started_by_hand(image: str, port: int, labels: tuple[str, ...], restart: str = "no") -> str:
    """A container someone else started (as `docker run` or Compose would), Phoenix-free."""
    name = f"phoenix-test-by-hand-{port}"
    subprocess.run(
        [
            *("docker", "run", "-d", "--name", name, "--network=host", f"--restart={restart}"),
            *(f"--label={label}" for label in labels),
            image,
            *("httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"),
        ],
        check=True,
        capture_output=True,
    )
    return name


def adopting(selector: str, port: int) -> str:
    return f"""
  - name: api
    platform: docker
    adopt: {selector}
    port: {port}
    health:
      http: "http://127.0.0.1:{{port}}/health"
      interval: 200ms
      timeout: 1s
      failure_threshold: 2
    stop: {{grace: 1s}}
"""


def host_pid(name: str) -> int:
    shown = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Pid}}", name],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(shown.stdout.strip())


def still_running(name: str) -> bool:
    shown = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Running}}", name],
        capture_output=True,
        text=True,
    )
    return shown.stdout.strip() == "true"


@pytest.mark.parametrize(
    ("labels", "selector"),
    [
        (("app=phoenix-test-api",), "{label: app=phoenix-test-api}"),
        (
            ("com.docker.compose.project=phoenixtest", "com.docker.compose.service=api"),
            "{compose_project: phoenixtest, compose_service: api}",
        ),
    ],
    ids=["label", "compose"],
)
async def test_a_container_started_by_hand_is_adopted_and_restarted_in_place(
    tmp_path: Path, docker_image: str, labels: tuple[str, ...], selector: str
) -> None:
    """Phoenix takes over a running container it did not create (by a label, or by its
    Compose project and service): no new container, the same one started again after it
    is killed, and it is left running when Phoenix stops."""
    port = free_port()
    name = started_by_hand(docker_image, port, labels)
    try:
        async with engine(tmp_path, adopting(selector, port)) as runtime:
            assert runtime.docker is not None
            await healthy(runtime, "api")
            [adopted] = runtime.docker.instances("api")
            assert adopted.id == name
            os.kill(host_pid(name), signal.SIGKILL)
            recovery = await its_recovery(runtime, "api", timeout=10)
            assert recovery.status is RecoveryStatus.COMPLETED, recovery
            [again] = runtime.docker.instances("api")
            assert again.id == name and again.state is InstanceState.RUNNING
            assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        assert still_running(name), "Phoenix leaves a container it adopted running"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


async def test_a_container_dockers_restart_policy_restarts_is_not_fought_over(
    tmp_path: Path, docker_image: str
) -> None:
    """An adopted container with restart=always: Phoenix does not restart it too (that is
    Docker's job here, and the 422 says so); its crash is recorded as an incident, and
    Docker brings it back."""
    port = free_port()
    name = started_by_hand(docker_image, port, ("app=phoenix-test-policy",), restart="always")
    try:
        async with engine(tmp_path, adopting("{label: app=phoenix-test-policy}", port)) as runtime:
            await healthy(runtime, "api")
            spec = runtime.catalog.get("api")
            assert runtime.orchestrator.supported(spec) == frozenset()
            reason = runtime.orchestrator.unavailable_reason(spec, Strategy.RESTART)
            assert "restart policy 'always'" in reason
            os.kill(host_pid(name), signal.SIGKILL)

            async def recorded() -> Incident | None:
                found, _ = await runtime.store.read(
                    incidents.list_incidents, service="api", status=None, limit=5, offset=0
                )
                return found[0] if found else None

            incident = await eventually(recorded, timeout=15, message="the crash recorded")
            assert "Phoenix can only monitor this service" in incident.summary, incident
            await healthy(runtime, "api")  # Docker restarted it
            assert await history(runtime, service="api") == []
            assert runtime.docker is not None
            [instance] = runtime.docker.instances("api")
            assert instance.id == name and instance.state is InstanceState.RUNNING
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


async def test_a_container_killed_for_memory_is_recorded_as_such_and_restarted(
    tmp_path: Path, docker_image: str
) -> None:
    """resources.memory_max is the container's memory limit: when it leaks (on a signal
    file here) past it, the kernel kills it; Phoenix hears the engine's oom and die, says
    'out of memory' in the record, and replaces it (the new one does not leak)."""
    port = free_port()
    leak = (
        "httpd -p 127.0.0.1:$PORT -h /www; "  # PORT: the port Phoenix assigned it
        "while [ ! -f /www/leak ]; do sleep 0.1; done; "
        "x=$(dd if=/dev/zero bs=1048576 count=400 2>/dev/null | tr '\\\\0' a); sleep 100"
    )
    services = f"""
  - name: leaky
    platform: docker
    image: {docker_image}
    command: [sh, -c, "{leak}"]
    port: {port}
    resources: {{memory_max: 64MiB}}
    health:
      http: "http://127.0.0.1:{{port}}/health"
      interval: 200ms
      timeout: 1s
    stop: {{grace: 1s}}
"""
    async with engine(tmp_path, services) as runtime:
        assert runtime.docker is not None
        await healthy(runtime, "leaky")
        [before] = runtime.docker.instances("leaky")
        busybox_in(before.id, "touch", "/www/leak")
        recovery = await its_recovery(runtime, "leaky", timeout=30)
        assert recovery.status is RecoveryStatus.COMPLETED, recovery
        assert "out of memory (limit 64 MiB)" in (recovery.steps[0].detail or ""), recovery
        [after] = runtime.docker.instances("leaky")
        assert after.id != before.id


async def test_a_crash_loop_under_dockers_restart_policy_is_called_one(
    tmp_path: Path, docker_image: str
) -> None:
    """An adopted container with restart=always dies half a second after each start:
    Docker keeps restarting it (and backing off); Phoenix does not join in, and after three
    such restarts within reset_after it says the service is in a crash loop."""
    port = free_port()
    name = f"phoenix-test-by-hand-{port}"
    subprocess.run(
        [
            *("docker", "run", "-d", "--name", name, "--network=host", "--restart=always"),
            "--label=app=phoenix-test-loop",
            docker_image,
            *("sh", "-c", f"httpd -p 127.0.0.1:{port} -h /www; sleep 0.5; exit 1"),
        ],
        check=True,
        capture_output=True,
    )
    alerts: list[dict[str, object]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            alerts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    try:
        with LoopbackHTTPServer(Hook) as receiver:
            services = adopting("{label: app=phoenix-test-loop}", port)
            async with engine(tmp_path, services, ALERT_WEBHOOK=receiver.url) as runtime:

                def named() -> ServiceHealthView | None:
                    view = runtime.tracker.view("api")
                    return view if "crash loop" in view.reason else None

                view = await eventually(named, timeout=30, message="the crash loop named")
                assert "Docker's restart policy 'always' restarted it" in view.reason, view
                assert view.status is not ServiceStatus.HEALTHY
                assert await history(runtime, service="api") == [], "Phoenix did not join in"
                await eventually(
                    lambda: any("crash loop" in str(a.get("text")) for a in alerts),
                    timeout=20,
                    message="an alert naming the crash loop",
                )
        [alert] = [a for a in alerts if "crash loop" in str(a.get("text"))]
        assert alert["kind"] == "cannot_recover", alert
        assert "Docker's restart policy 'always' restarted it" in str(alert["text"])
        assert "a person must act" in str(alert["text"])
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


async def test_the_container_section_shapes_the_containers(
    tmp_path: Path, docker_image: str
) -> None:
    """Volumes, the user's labels, the user and a declared healthcheck reach the container:
    it writes through its bind mount as the declared user, carries the labels beside
    Phoenix's own, and when the declared healthcheck fails, Phoenix replaces it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    port = free_port()
    services = f"""
  - name: web
    platform: docker
    image: {docker_image}
    command: [sh, -c, "id -u > /data/uid; exec httpd -f -p 127.0.0.1:$PORT -h /www"]
    port: {port}
    container:
      volumes: ["{shared}:/data"]
      labels: {{team: shop}}
      user: "1234:1234"
      healthcheck: {{command: [/bin/busybox, test, -f, /www/ready], interval: 200ms,
                    timeout: 1s, retries: 2}}
    health:
      http: "http://127.0.0.1:{{port}}/health"
      interval: 200ms
      timeout: 1s
    stop: {{grace: 1s}}
"""
    async with engine(tmp_path, services) as runtime:
        assert runtime.docker is not None
        await healthy(runtime, "web")
        [before] = runtime.docker.instances("web")
        shown = json.loads(
            subprocess.run(
                ["docker", "inspect", before.id], check=True, capture_output=True, text=True
            ).stdout
        )[0]
        assert shown["Config"]["Labels"]["team"] == "shop"
        assert shown["Config"]["Labels"]["phoenix.service"] == "web"
        assert shown["Config"]["User"] == "1234:1234"
        assert (shared / "uid").read_text().strip() == "1234", "written through the mount"
        assert shown["Config"]["Healthcheck"]["Test"][:2] == ["CMD", "/bin/busybox"]
        # /www/ready cannot be removed by uid 1234 (root owns it): the test does it as root.
        busybox_in(before.id, "rm", "/www/ready", root=True)
        recovery = await its_recovery(runtime, "web")
        assert recovery.status is RecoveryStatus.COMPLETED, recovery
        assert "Docker's HEALTHCHECK says unhealthy" in recovery.reason
        [after] = runtime.docker.instances("web")
        assert after.id != before.id
