"""Docker: containers Phoenix creates and owns, or adopts (see ``platform.py``)."""

from phoenix_server.platforms.docker.engine import engine_address, usage_of
from phoenix_server.platforms.docker.platform import DockerPlatform

__all__ = ["DockerPlatform", "engine_address", "usage_of"]
