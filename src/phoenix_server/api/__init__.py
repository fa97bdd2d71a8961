"""The REST API: one router module per resource, schemas beside their routes, errors mapped
to the envelope of API.md. Only this package imports FastAPI."""
