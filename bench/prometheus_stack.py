"""The real Prometheus, Alertmanager and blackbox exporter (Debian's packages) as child
processes on free loopback ports, each with its own configuration and data directory: for
``bench/alerting`` and ``tests/e2e/test_prometheus_stack_e2e.py``.

Each program starts with its final configuration (Prometheus drops alerts for a few seconds
after a reload) and is stopped with SIGTERM, then SIGKILL after 10 s.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.mttr import free_port

PROGRAMS = {
    "prometheus": "prometheus",
    "alertmanager": "prometheus-alertmanager",
    "blackbox": "prometheus-blackbox-exporter",
}
"""Each program and the executable (and Debian package) that provides it."""


def missing_programs() -> list[str]:
    """The Debian packages whose executables are not on PATH."""
    return [exe for exe in PROGRAMS.values() if shutil.which(exe) is None]


@dataclass
class Program:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


def _get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


class PrometheusStack:
    """Ports are chosen at construction, so configurations can name them; ``start`` writes
    the configurations and starts the three programs, ``close`` stops them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.blackbox_port = free_port()
        self.alertmanager_port = free_port()
        self.prometheus_port = free_port()
        self.prometheus_url = f"http://127.0.0.1:{self.prometheus_port}"
        self.programs: list[Program] = []

    def blackbox_job(self, targets: dict[str, str], *, interval: str = "500ms") -> dict[str, Any]:
        """A scrape job probing each URL through the blackbox exporter (``http_2xx``), its
        series labelled ``service`` with the key naming it."""
        return {
            "job_name": "blackbox",
            "scrape_interval": interval,
            "metrics_path": "/probe",
            "params": {"module": ["http_2xx"]},
            "static_configs": [
                {"targets": [url], "labels": {"service": service}}
                for service, url in targets.items()
            ],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": f"127.0.0.1:{self.blackbox_port}"},
            ],
        }

    def start(
        self,
        *,
        scrape_configs: list[dict[str, Any]],
        rule_files: list[Path],
        alertmanager: dict[str, Any],
        interval: str = "500ms",
    ) -> PrometheusStack:
        work = self.workdir
        (work / "blackbox.yml").write_text(
            yaml.safe_dump({"modules": {"http_2xx": {"prober": "http", "timeout": "1s"}}})
        )
        (work / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager))
        prometheus = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "alerting": {
                "alertmanagers": [
                    {"static_configs": [{"targets": [f"127.0.0.1:{self.alertmanager_port}"]}]}
                ]
            },
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": scrape_configs,
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(prometheus))
        try:
            self._run(
                "blackbox",
                f"--config.file={work / 'blackbox.yml'}",
                f"--web.listen-address=127.0.0.1:{self.blackbox_port}",
                # A probe gets the scrape timeout less this offset (0.5 s by default).
                "--timeout-offset=0.1",
            )
            self._run(
                "alertmanager",
                f"--config.file={work / 'alertmanager.yml'}",
                f"--storage.path={work / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
                "--cluster.listen-address=",  # no gossip port
            )
            self._run(
                "prometheus",
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
            )
            ready = {
                "blackbox": f"http://127.0.0.1:{self.blackbox_port}/metrics",
                "alertmanager": f"http://127.0.0.1:{self.alertmanager_port}/-/ready",
                "prometheus": f"{self.prometheus_url}/-/ready",
            }
            for program in self.programs:
                self._ready(program, ready[program.name])
        except BaseException:
            self.close()
            raise
        return self

    def _run(self, name: str, *args: str) -> None:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [PROGRAMS[name], *args],
                cwd=self.workdir,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.programs.append(Program(name, process, log))

    @staticmethod
    def _ready(program: Program, url: str) -> None:
        def answers() -> bool:
            if program.process.poll() is not None:
                raise RuntimeError(f"{program.name} exited: {program.output()}")
            try:
                return _get(url, timeout=1)[0] == 200
            except OSError:
                return False

        _wait(answers, 30, f"{program.name} ready at {url}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant PromQL query's result vector."""
        status, body = _get(
            f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        )
        if status != 200:
            raise RuntimeError(f"Prometheus answered {status} to {promql!r}: {body[:300]!r}")
        result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its file, health and last error."""
        status, body = _get(f"{self.prometheus_url}/api/v1/rules")
        if status != 200:
            raise RuntimeError(f"Prometheus answered {status} to /api/v1/rules")
        groups = json.loads(body)["data"]["groups"]
        return [{**rule, "file": group["file"]} for group in groups for rule in group["rules"]]

    def targets(self) -> Any:
        return json.loads(_get(f"{self.prometheus_url}/api/v1/targets")[1])

    def close(self) -> None:
        for program in self.programs:
            if program.process.poll() is None:
                program.process.send_signal(signal.SIGTERM)
        for program in self.programs:
            try:
                program.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                program.process.kill()
                program.process.wait()
        self.programs.clear()
