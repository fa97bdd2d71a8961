"""The dashboard's static page, script and style (served by ``api.dashboard``; no build
step: plain HTML, CSS and a JavaScript module)."""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"
