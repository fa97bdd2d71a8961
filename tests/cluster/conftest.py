"""The store tests' PostgreSQL fixtures, for the membership tests here."""

from tests.store.conftest import migrated_postgres, postgres_store

__all__ = ["migrated_postgres", "postgres_store"]
