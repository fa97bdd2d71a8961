"""Building catalogs from YAML snippets for monitoring tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

from phoenix_server.config.servicefile import parse_service_file
from phoenix_server.domain.services import ServiceCatalog
from tests.support import free_port

__all__ = ["catalog_of", "free_port"]


def catalog_of(body: str, *, default_interval: float = 1.0) -> ServiceCatalog:
    text = "services:\n" + textwrap.indent(textwrap.dedent(body), "  ")
    return parse_service_file(
        text, source="test", base_dir=Path.cwd(), default_interval=default_interval
    )
