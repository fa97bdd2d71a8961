"""Container stats read as ``docker stats`` shows them (cgroup v1 and v2 answers)."""

from __future__ import annotations

from phoenix_server.platforms.base import Usage
from phoenix_server.platforms.docker import usage_of


def test_usage_is_read_as_docker_stats_shows_it() -> None:
    v1 = {
        "memory_stats": {"usage": 5_000_000, "stats": {"total_inactive_file": 1_000_000}},
        "cpu_stats": {
            "cpu_usage": {"total_usage": 3_000_000_000},
            "system_cpu_usage": 20_000_000_000,
            "online_cpus": 2,
        },
        "precpu_stats": {
            "cpu_usage": {"total_usage": 2_000_000_000},
            "system_cpu_usage": 10_000_000_000,
        },
    }
    assert usage_of(v1) == Usage(memory=4_000_000.0, cpu=20.0)
    v2 = {
        "memory_stats": {"usage": 3_000_000, "stats": {"inactive_file": 500_000}},
        "cpu_stats": {"cpu_usage": {"total_usage": 1}, "system_cpu_usage": 1},
        "precpu_stats": {},
    }
    usage = usage_of(v2)
    assert usage is not None and usage.memory == 2_500_000.0
    assert usage_of({"memory_stats": {}}) is None  # a container that just ended
