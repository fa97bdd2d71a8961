"""Durable state: SQLAlchemy tables, one repository module per resource, Alembic migrations.

SQLite (WAL) by default, PostgreSQL for shared state; the same code runs on both. Only this
package imports SQLAlchemy. Domain objects go in and come out; rows never leave.
"""
