"""Fixtures of the platform tests."""

from tests.platforms.docker_engine import docker_image, second_engine

__all__ = ["docker_image", "second_engine"]
