"""What Phoenix can do for a service now: what its platform can carry out, and a rollback
only with a known-good version to go to — and, for anything else, what is missing."""

from __future__ import annotations

from phoenix_server.domain.deployments import no_rollback_reason
from phoenix_server.domain.recoveries import Strategy
from phoenix_server.domain.services import ServiceSpec
from phoenix_server.platforms.base import ADVICE, PlatformRegistry
from phoenix_server.recovery.versions import VersionKeeper


class Means:
    def __init__(self, platforms: PlatformRegistry, versions: VersionKeeper) -> None:
        self._platforms = platforms
        self._versions = versions

    def platform_can(self, spec: ServiceSpec) -> frozenset[Strategy]:
        """What the platform can carry out for ``spec``, whatever versions are known."""
        return self._platforms.for_service(spec).supported_strategies(spec)

    def supported(self, spec: ServiceSpec) -> frozenset[Strategy]:
        """What can be done for ``spec`` now."""
        supported = self.platform_can(spec)
        if Strategy.ROLLBACK in supported and self._versions.rollback_target(spec) is None:
            supported -= {Strategy.ROLLBACK}
        return supported

    def advice(self, spec: ServiceSpec) -> tuple[Strategy, str] | None:
        """What the service's platform says its failure calls for, if it can do it now."""
        advising = ADVICE.of(self._platforms.for_service(spec))
        found = advising.advise(spec) if advising is not None else None
        if found is None or found[0] not in self.supported(spec):
            return None
        return found

    def unavailable_reason(self, spec: ServiceSpec, strategy: Strategy) -> str:
        """Why ``strategy`` cannot be used for ``spec`` now, in words an operator can act on."""
        reasons = self._platforms.for_service(spec).unavailable_strategies(spec)
        if strategy in reasons:
            return reasons[strategy]
        if strategy is Strategy.ROLLBACK:
            return no_rollback_reason(spec, spec.current_version, self._versions.proven(spec.name))
        return f"service '{spec.name}' cannot use strategy '{strategy.value}' now"
