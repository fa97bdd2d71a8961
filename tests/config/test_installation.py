"""This installation's identity survives restarts and new hostnames (a Kubernetes pod gets
a new one on every restart), keeps what earlier versions derived, and refuses bad ids."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from phoenix_server.config.installation import ID_FILE, derived_id, installation_id
from phoenix_server.config.settings import Settings, load_settings
from phoenix_server.domain.errors import ConfigError


def settings(data_dir: Path, **env: str) -> Settings:
    return load_settings(PHOENIX_DATA_DIR=str(data_dir), **env)


def test_the_first_start_keeps_the_id_earlier_versions_derived(tmp_path: Path) -> None:
    data = tmp_path / "var"
    expected = derived_id(data)  # the owner of the records an upgraded installation has
    assert installation_id(settings(data)) == expected
    assert (data / ID_FILE).read_text(encoding="utf-8") == expected + "\n"


def test_a_new_hostname_keeps_the_same_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "var"
    first = installation_id(settings(data))
    monkeypatch.setattr(socket, "gethostname", lambda: "phoenix-7f9c4-xk2lp")
    assert derived_id(data) != first, "the hostname did change what would be derived"
    assert installation_id(settings(data)) == first


def test_a_configured_id_wins_and_a_bad_one_is_refused_naming_its_source(
    tmp_path: Path,
) -> None:
    data = tmp_path / "var"
    assert installation_id(settings(data, PHOENIX_INSTALLATION_ID="phoenix-0")) == "phoenix-0"
    assert not (data / ID_FILE).exists(), "a configured id writes nothing"
    with pytest.raises(ConfigError, match="from PHOENIX_INSTALLATION_ID is not valid"):
        installation_id(settings(data, PHOENIX_INSTALLATION_ID="two words"))
    with pytest.raises(ConfigError, match="not valid"):
        installation_id(settings(data, PHOENIX_INSTALLATION_ID="x" * 33))


def test_a_damaged_id_file_stops_phoenix_rather_than_change_its_identity(tmp_path: Path) -> None:
    data = tmp_path / "var"
    data.mkdir()
    (data / ID_FILE).write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"from {data / ID_FILE} is not valid"):
        installation_id(settings(data))


def test_a_data_directory_that_cannot_be_made_falls_back_to_the_derived_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    data = blocker / "var"
    assert installation_id(settings(data)) == derived_id(data)
    assert "not kept in" in caplog.text and "set PHOENIX_INSTALLATION_ID" in caplog.text
