"""Two Phoenix replicas (real processes, one PostgreSQL) looking after a Deployment on the
fake Kubernetes API server: one of them acts on it, a failing pod is replaced once, not
twice, and when that replica dies the other takes the Deployment over and acts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.cluster.replicas import LEASE, Replicas
from tests.kubernetes.fake.behaviour import Behaviour
from tests.kubernetes.fake.cluster import FakeCluster
from tests.kubernetes.workloads import (
    NAMESPACE,
    cluster_prelude,
    deployment,
    namespace,
    web_service,
)
from tests.store.conftest import postgres_schema
from tests.support import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

T = TypeVar("T")


class ClusterThread:
    """The fake cluster on an event loop of its own thread, so that blocking test code and
    Phoenix processes can use it at the same time."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.cluster: FakeCluster | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.failures: list[str] = []

    def _run(self) -> None:
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with FakeCluster() as cluster:
            await cluster.apply(namespace())
            self.cluster = cluster
            self._ready.set()
            await self._stop.wait()
            self.failures = list(cluster.failures)

    def __enter__(self) -> ClusterThread:
        self._thread.start()
        assert self._ready.wait(30), "the fake cluster did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def call(self, fn: Callable[[FakeCluster], T]) -> T:
        """``fn(cluster)`` on the cluster's loop (its state is not thread-safe)."""
        done: Future[T] = Future()

        def apply() -> None:
            assert self.cluster is not None
            try:
                done.set_result(fn(self.cluster))
            except BaseException as exc:  # handed to the caller
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(apply)
        return done.result(30)


def running_pods(fake: ClusterThread) -> list[str]:
    return fake.call(
        lambda c: sorted(
            p["metadata"]["name"]
            for p in c.pods(NAMESPACE, {"app": "web"})
            if not p["metadata"].get("deletionTimestamp")
        )
    )


def acts(fake: ClusterThread) -> list[tuple[str, str, str | None]]:
    """What Phoenix did to replace pods: each pod deleted, each Deployment patched (a
    rollout restart, when no pod of the service was yet seen passing its probes)."""
    return fake.call(
        lambda c: [
            (r.verb, r.resource, r.name)
            for r in c.server.requests
            if (r.verb, r.resource) in (("delete", "pods"), ("patch", "deployments"))
        ]
    )


@contextmanager
def two_replicas(tmp_path: Path, fake: ClusterThread) -> Iterator[Replicas]:
    assert fake.cluster is not None
    kubeconfig = fake.call(lambda c: c.kubeconfig_path(tmp_path))
    config = tmp_path / "phoenix.yaml"
    config.write_text(cluster_prelude(str(kubeconfig)) + "services:\n" + web_service())
    with postgres_schema() as (url, _schema):
        group = Replicas(tmp_path, config, url, 2)
        try:
            group.start_all()
            wait_until(lambda: group.owner_of("web") is not None, timeout=10 * LEASE)
            yield group
        finally:
            group.close()


def test_one_replica_replaces_a_failing_pod_once_and_the_other_takes_over_when_it_dies(
    tmp_path: Path,
) -> None:
    with ClusterThread() as fake:
        fake.run(fake.cluster.apply(deployment(replicas=2)))  # type: ignore[union-attr]
        wait_until(lambda: len(running_pods(fake)) == 2, timeout=30, message="two pods")
        with two_replicas(tmp_path, fake) as group:
            owner = group.owner_of("web")
            assert owner is not None
            other = next(name for name in group.names if name != owner)
            wait_until(lambda: group.servers[owner].status_of("web") == "healthy", timeout=30)

            bad = running_pods(fake)[0]
            fake.call(lambda c: c.set_pod_behaviour(bad, Behaviour.CRASH, NAMESPACE))
            wait_until(lambda: bad not in running_pods(fake), timeout=40, message="replaced")
            wait_until(lambda: len(running_pods(fake)) == 2, timeout=40)
            wait_until(lambda: group.servers[owner].status_of("web") == "healthy", timeout=40)
            assert len(acts(fake)) == 1, f"replaced once, by one replica: {acts(fake)}"
            wait_until(
                lambda: (
                    [r["status"] for r in group.servers[other].recoveries_of("web")]
                    == ["completed"]
                ),
                timeout=40,
                message="one recovery, completed (read on the other replica)",
            )
            wait_until(
                lambda: f"as {owner} saw it" in group.servers[other].health_of("web")["reason"],
                timeout=10 * LEASE,
                message="the owner's view of web on the other replica",
            )

            group.kill(owner)
            wait_until(
                lambda: group.owner_of("web", besides=owner) == other,
                timeout=4 * LEASE,
                message="the survivor owning the Deployment",
            )
            survivor = group.servers[other]
            wait_until(lambda: survivor.status_of("web") == "healthy", timeout=30)
            second = running_pods(fake)[0]
            fake.call(lambda c: c.set_pod_behaviour(second, Behaviour.CRASH, NAMESPACE))
            wait_until(lambda: second not in running_pods(fake), timeout=40, message="replaced")
            wait_until(lambda: len(acts(fake)) >= 2, timeout=40)
            wait_until(
                lambda: (
                    [r["status"] for r in survivor.recoveries_of("web")]
                    == ["completed", "completed"]
                ),
                timeout=40,
            )
            assert len(acts(fake)) == 2, acts(fake)
    assert fake.failures == []
