"""Fixtures of the platform tests."""

from tests.platforms.docker_engine import docker_image

__all__ = ["docker_image"]
