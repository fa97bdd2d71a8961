"""The store as the engine sees it: the recovery recorder and the platforms' instance journal.

These adapters satisfy the protocols of ``recovery.ports`` and ``platforms.base``
structurally, so neither layer imports the store.
"""

from __future__ import annotations

from phoenix_server.domain.incidents import Incident
from phoenix_server.domain.recoveries import Recovery, Step, Strategy
from phoenix_server.domain.services import Instance, PlatformKind
from phoenix_server.store import incidents, instances, recoveries
from phoenix_server.store.database import Store


class StoreRecorder:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def save_recovery(self, recovery: Recovery) -> None:
        await self._store.write(recoveries.save_recovery, recovery)

    async def save_step(self, recovery_id: str, step: Step) -> None:
        await self._store.write(recoveries.save_step, recovery_id, step)

    async def save_incident(self, incident: Incident) -> None:
        await self._store.write(incidents.save_incident, incident)

    async def successful_durations(
        self, service: str, strategy: Strategy, limit: int
    ) -> list[float]:
        return await self._store.read(
            recoveries.successful_durations, service=service, strategy=strategy, limit=limit
        )


class StoreJournal:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def save_instance(self, instance: Instance) -> None:
        await self._store.write(instances.save_instance, instance)

    async def remove_instance(self, instance_id: str) -> None:
        await self._store.write(instances.remove_instance, instance_id)

    async def load_instances(self, platform: PlatformKind) -> list[Instance]:
        return await self._store.read(instances.load_instances, platform)
