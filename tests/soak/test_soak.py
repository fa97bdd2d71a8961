"""The soak: 500 recovery triggers against real services while Phoenix is SIGKILLed and
restarted 5 times. Afterwards every trigger that got a 2xx is in the history, none is
stuck pending or in progress, the SQLite database passes its integrity check, and no
service process is left orphaned. Run by ``make soak`` (and ``.ci/run``), not ``make test``.
"""

from __future__ import annotations

import random
import signal
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.support import PhoenixServer, free_port, service_file, wait_until, web_service_yaml

pytestmark = pytest.mark.soak

TRIGGERS = 500
KILLS = 5
SERVICES = ["alpha", "beta", "gamma"]
LARGE_BUDGET = "    recovery: {budget: {attempts: 10000, window: 1h}}\n"


def test_triggers_survive_five_phoenix_kills(tmp_path: Path) -> None:
    path = service_file(
        tmp_path,
        *(
            web_service_yaml(name, free_port(), extra=LARGE_BUDGET, interval="200ms")
            for name in SERVICES
        ),
    )
    data = tmp_path / "var"
    chooser = random.Random(7)
    acknowledged: list[str] = []
    answers: dict[int, int] = {}
    server = PhoenixServer(path, data).start()
    try:
        kill_at = {TRIGGERS * (k + 1) // (KILLS + 1) for k in range(KILLS)}
        for sent in range(TRIGGERS):
            if sent in kill_at:
                server.stop(signal.SIGKILL)
                server.client.close()
                server = PhoenixServer(path, data).start()
            body = {
                "service": chooser.choice(SERVICES),
                "strategy": "restart",
                "reason": f"soak {sent}",
                "force": chooser.random() < 0.5,
            }
            try:
                answer = server.post("/api/recovery/trigger", json=body)
            except httpx.TransportError:
                continue
            answers[answer.status_code] = answers.get(answer.status_code, 0) + 1
            assert answer.status_code < 500, answer.text
            if answer.status_code == 202:
                acknowledged.append(answer.json()["recoveryId"])
        assert len(acknowledged) >= TRIGGERS // 4, answers

        wait_until(
            lambda: server.get("/health").json()["activeRecoveries"] == 0,
            timeout=120,
            message="every recovery ended",
        )
        for recovery_id in acknowledged:
            found = server.get(f"/api/recovery/status/{recovery_id}")
            assert found.status_code == 200, f"{recovery_id} acknowledged, then lost"
            status = found.json()["recovery"]["status"]
            assert status in ("completed", "failed", "interrupted", "cancelled"), recovery_id
        history = server.get("/api/recovery/history", params={"limit": 1000}).json()
        assert not [r for r in history["recoveries"] if r["status"] in ("pending", "in_progress")]
        for name in SERVICES:
            wait_until(lambda name=name: server.status_of(name) == "healthy", timeout=30)
    finally:
        server.close()
    with sqlite3.connect(data / "phoenix.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    print(f"soak: {len(acknowledged)} of {TRIGGERS} triggers acknowledged; answers {answers}")
