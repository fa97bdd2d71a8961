"""``GET /api/metrics/summary`` compares each service's uptime with its first day under
Phoenix, and remembers when management began across Phoenix restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from phoenix_server.config.settings import load_settings
from phoenix_server.domain.health import UptimeBaseline
from phoenix_server.store import baselines
from phoenix_server.store.database import Store
from phoenix_server.support.timefmt import iso_ms
from tests.support import free_port, running_phoenix, service_file, wait_until, web_service_yaml


def test_uptime_change_since_phoenix_began_managing(tmp_path: Path) -> None:
    data = tmp_path / "var"
    began = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    store = Store(load_settings(PHOENIX_DATA_DIR=str(data)).effective_database_url)
    store.migrate()
    # An earlier Phoenix managed "old" from three days ago; its first day was a bad one.
    store.run_sync(
        baselines.save_baselines,
        [UptimeBaseline("old", managed_since=began, first_day_uptime=62.5, complete=True)],
    )
    store.close()
    path = service_file(
        tmp_path, web_service_yaml("old", free_port()), web_service_yaml("new", free_port())
    )

    def services() -> dict[str, dict[str, object]]:
        body = server.get("/api/metrics/summary").json()
        return {s["service"]: s for s in body["services"]}

    with running_phoenix(path, data) as server:
        wait_until(
            lambda: services()["old"]["uptime"] == 100.0 and services()["new"]["managedSince"],
            timeout=20,
        )
        old, new = services()["old"], services()["new"]
        assert old["managedSince"] == iso_ms(began) and old["firstDayUptime"] == 62.5
        assert old["uptimeChange"] == 37.5
        assert new["uptimeChange"] is None, "its first day is not over"
        new_began = new["managedSince"]
    with running_phoenix(path, data) as server:
        wait_until(lambda: services()["new"]["managedSince"], timeout=20)
        assert services()["new"]["managedSince"] == new_began, "kept across restarts"
