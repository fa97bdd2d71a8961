"""The store tests' PostgreSQL fixtures, for the membership tests here, and the Docker
test image for docker services among replicas."""

from tests.platforms.docker_engine import docker_image
from tests.store.conftest import migrated_postgres, postgres_store

__all__ = ["docker_image", "migrated_postgres", "postgres_store"]
