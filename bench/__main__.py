"""Run every benchmark in turn: ``python -m bench [name ...]``."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = [
    "mttr",
    "probes",
    "probe_clients",
    "router",
    "api",
    "failover",
    "detect",
    "detect_candidates",
    "detection",
    "learning",
    "alerting",
    "docker_client",
    "docker",
    "kubernetes",
    "replicas",
]


def main() -> None:
    chosen = sys.argv[1:] or BENCHMARKS
    for name in chosen:
        if name not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        print(f"\n=== bench/{name} ===", flush=True)
        importlib.import_module(f"bench.{name}").main([])


if __name__ == "__main__":
    main()
