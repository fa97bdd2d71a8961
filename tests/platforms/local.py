"""Shared by the local platform's tests: a test owner, service specs from YAML, and a
recorder of platform events."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

from phoenix_server.config.servicefile import parse_service_file
from phoenix_server.domain.services import ServiceSpec
from phoenix_server.platforms.base import InstanceEvent, InstanceEventKind

OWNER = "test-owner-" + str(os.getpid())


def spec_of(tmp_path: Path, body: str) -> ServiceSpec:
    text = "services:\n" + textwrap.indent(textwrap.dedent(body), "  ")
    catalog = parse_service_file(text, source="test", base_dir=tmp_path, default_interval=1.0)
    return next(iter(catalog))


class Recorder:
    """Collects platform events with the monotonic time they arrived."""

    def __init__(self) -> None:
        self.events: list[tuple[float, InstanceEvent]] = []

    def __call__(self, event: InstanceEvent) -> None:
        self.events.append((time.monotonic(), event))

    def kinds(self) -> list[InstanceEventKind]:
        return [event.kind for _, event in self.events]

    def first(self, kind: InstanceEventKind) -> tuple[float, InstanceEvent] | None:
        return next(((t, e) for t, e in self.events if e.kind is kind), None)
