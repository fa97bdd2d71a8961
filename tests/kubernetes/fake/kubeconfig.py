"""Kubeconfig files and lightkube configurations for a fake API server.

lightkube accepts a plain ``http://`` server in a kubeconfig (httpx ignores the TLS context it
builds for the cluster), so the fake serves plain HTTP on loopback; the bearer token still
travels in every request, and the server refuses requests without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from lightkube import KubeConfig

CONTEXT = "fake"
USER = "phoenix"


def document(server: str, token: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server}}],
        "users": [{"name": USER, "user": {"token": token}}],
        "contexts": [
            {"name": CONTEXT, "context": {"cluster": CONTEXT, "user": USER, "namespace": namespace}}
        ],
        "current-context": CONTEXT,
        "preferences": {},
    }


def build(server: str, token: str, namespace: str = "default") -> KubeConfig:
    return KubeConfig.from_dict(document(server, token, namespace))


def write(path: Path, server: str, token: str, namespace: str = "default") -> Path:
    """Write a kubeconfig file (``path`` may be a directory: the file is ``kubeconfig`` in it)."""
    if path.is_dir():
        path = path / "kubeconfig"
    path.write_text(yaml.safe_dump(document(server, token, namespace), sort_keys=False))
    path.chmod(0o600)
    return path
