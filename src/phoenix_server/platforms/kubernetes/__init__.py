"""Services run as a Kubernetes cluster's workloads, acted on through its API (lightkube)."""

from phoenix_server.platforms.kubernetes.platform import KubernetesPlatform

__all__ = ["KubernetesPlatform"]
