"""Containers no replica will ever adopt: those of a docker service that every live replica's
service file stopped declaring.

A docker service any replica may own (unrouted, no ``replica:``) outlives its owner: its
containers carry the cluster's label, and whichever replica takes its lease adopts them.
Once the service leaves the service file, no replica takes its lease again, and nothing
would ever stop them. Every live replica that declares a service takes its free lease
within a heartbeat, so a lease left free for :data:`ABANDONED_AFTER_LEASES` leases (five
minutes at the default lease: longer than a rolling restart of a replica that still
declares it) belongs to a service no live replica declares: its containers are removed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import timedelta

from phoenix_server.domain.errors import PlatformError, UnavailableError
from phoenix_server.platforms.docker.platform import DockerPlatform
from phoenix_server.store import cluster
from phoenix_server.store.database import Store

log = logging.getLogger("phoenix.cluster")

ABANDONED_AFTER_LEASES = 30
LOOK_EVERY_LEASES = 3
"""The leases are looked at every three leases (30 s at the default)."""


class AbandonedContainers:
    def __init__(
        self,
        store: Store,
        *,
        member: str,
        dockers: Sequence[DockerPlatform],
        declared: Callable[[], Collection[str]],
        lease: float,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._store = store
        self._member = member
        self._dockers = dockers
        self._declared = declared
        self._lease = lease
        self._sleep = sleep
        self._said: set[str] = set()
        """Services whose failed removal was logged already (said once, tried again)."""

    async def run(self) -> None:
        while True:
            await self._sleep(self._lease * LOOK_EVERY_LEASES)
            try:
                await self.clear_once()
            except UnavailableError:
                continue  # the database is away: /health says so; looked at again later

    async def clear_once(self) -> dict[str, list[str]]:
        """Remove the containers of every service abandoned since the last look; return
        what was removed (service → container names). Each is held by this replica while
        its containers are removed: no replica adopts one that is being removed."""
        claimed = await self._store.write(
            cluster.claim_abandoned,
            member=self._member,
            declared=set(self._declared()),
            free_for=timedelta(seconds=self._lease * ABANDONED_AFTER_LEASES),
            lease=timedelta(seconds=self._lease),
        )
        removed: dict[str, list[str]] = {}
        cleared: set[str] = set()
        try:
            for service in claimed:
                found = await self._remove(service)
                if found is None:
                    continue
                cleared.add(service)
                if found:
                    removed[service] = found
                    log.warning(
                        "removed container(s) %s of service '%s': no live replica has "
                        "declared it for %d leases (it left the service file)",
                        ", ".join(found),
                        service,
                        ABANDONED_AFTER_LEASES,
                    )
        finally:
            if claimed:
                await self._store.write(
                    cluster.release_claimed, member=self._member, claimed=claimed, cleared=cleared
                )
        return removed

    async def _remove(self, service: str) -> list[str] | None:
        """The containers of ``service`` removed from every engine (None: some engine could
        not be asked; tried again at the next look)."""
        found: list[str] = []
        try:
            for docker in self._dockers:
                found += await docker.remove_abandoned(service)
        except PlatformError as exc:
            if service not in self._said:
                self._said.add(service)
                log.info("cannot remove what is left of service '%s': %s", service, exc.message)
            return None
        return found
