"""Identifiers with a kind prefix (``rec-…``, ``pb-…``, ``inc-…``), as API.md fixes them."""

from __future__ import annotations

import secrets

RECOVERY = "rec"
PLAYBOOK = "pb"
INCIDENT = "inc"
ALERT = "alt"
DEPLOYMENT = "dep"
AUDIT = "aud"


def new_id(prefix: str) -> str:
    """A fresh random id such as ``rec-3f9a1c0b7d2e``; 48 random bits never collide in practice
    for the number of records one Phoenix keeps, and the database's primary key would refuse
    a duplicate anyway."""
    return f"{prefix}-{secrets.token_hex(6)}"
