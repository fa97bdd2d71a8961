"""How a fake container behaves, chosen by its image or per pod, changeable at any time."""

from __future__ import annotations

import asyncio
import enum


class Behaviour(enum.Enum):
    HEALTHY = "healthy"
    CRASH = "crash"  # exits 1 (reason Error) soon after starting; restarted with back-off
    OOM = "oom"  # like CRASH, but killed for memory: reason OOMKilled, exit code 137
    UNREADY = "unready"  # runs, but readiness fails: never Ready, and its server answers 503
    HANG = "hang"  # runs and is Ready, but its server accepts connections and never answers
    IMAGE_PULL = "image-pull"  # its image cannot be pulled: ErrImagePull / ImagePullBackOff
    CONFIG_ERROR = "config-error"  # CreateContainerConfigError: never created

    @property
    def crashes(self) -> bool:
        return self in (Behaviour.CRASH, Behaviour.OOM)

    @property
    def starts(self) -> bool:
        return self not in (Behaviour.IMAGE_PULL, Behaviour.CONFIG_ERROR)


PodKey = tuple[str, str]  # (namespace, name)


class Behaviours:
    """What tests ask of containers: by image, overridden per pod; one-off crashes."""

    def __init__(self) -> None:
        self._by_image: dict[str, Behaviour] = {}
        self._by_pod: dict[PodKey, Behaviour] = {}
        self._crash_requests: set[PodKey] = set()
        self._changed = asyncio.Event()

    def for_container(self, pod: PodKey, image: str) -> Behaviour:
        return self._by_pod.get(pod) or self._by_image.get(image, Behaviour.HEALTHY)

    def set_image(self, image: str, behaviour: Behaviour) -> None:
        self._by_image[image] = behaviour
        self._notify()

    def set_pod(self, pod: PodKey, behaviour: Behaviour | None) -> None:
        if behaviour is None:
            self._by_pod.pop(pod, None)
        else:
            self._by_pod[pod] = behaviour
        self._notify()

    def request_crash(self, pod: PodKey) -> None:
        self._crash_requests.add(pod)
        self._notify()

    def take_crash_request(self, pod: PodKey) -> bool:
        if pod in self._crash_requests:
            self._crash_requests.discard(pod)
            return True
        return False

    def forget(self, pod: PodKey) -> None:
        self._by_pod.pop(pod, None)
        self._crash_requests.discard(pod)

    async def changed(self, timeout: float | None) -> None:
        """Return when any behaviour changes, or after ``timeout`` seconds."""
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass

    def _notify(self) -> None:
        # Wake every waiter once, then start a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()
