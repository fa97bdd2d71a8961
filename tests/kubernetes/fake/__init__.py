"""A protocol-level fake Kubernetes API server and the controllers that play a cluster over it,
for testing Phoenix's Kubernetes platform with the real client library (lightkube)."""

from .apiserver import FakeApiServer, RequestRecord
from .behaviour import Behaviour
from .cluster import FakeCluster
from .kubelet import Timings

__all__ = ["Behaviour", "FakeApiServer", "FakeCluster", "RequestRecord", "Timings"]
