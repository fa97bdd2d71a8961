"""Fixtures of the Kubernetes tests: a fake cluster for Phoenix, and the record of what
Phoenix asked of the API across the whole run (the RBAC test compares it with the grants of
deploy/kubernetes/rbac.yaml).

The tests themselves change the cluster directly through the fake's store (``apply``,
``delete``), never over HTTP, so that every request the API server sees is Phoenix's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.kubernetes.fake.apiserver import RbacTriple
from tests.kubernetes.fake.cluster import FakeCluster
from tests.kubernetes.workloads import namespace

PHOENIX_REQUESTS: set[RbacTriple] = set()
"""(group, resource[/subresource], verb) of every request Phoenix made in this run."""
MODULES_SEEN: set[str] = set()
"""The test modules whose clusters Phoenix talked to (so the RBAC test knows whether it saw
the whole suite's requests or only some)."""


@pytest.fixture
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[FakeCluster]:
    """A fake cluster with the test namespace; what Phoenix requested is recorded at the end."""
    async with FakeCluster() as fake:
        await fake.apply(namespace())
        try:
            yield fake
        finally:
            PHOENIX_REQUESTS.update(fake.server.rbac_used())
            MODULES_SEEN.add(request.module.__name__.rsplit(".", 1)[-1])
