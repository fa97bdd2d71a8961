"""This installation's identity: the name its records and the processes it starts carry in a
shared database, so Phoenixes sharing one never touch each other's.

It must survive restarts. Derived from the hostname alone it would not for Phoenix in a
Kubernetes pod (a new hostname on every restart: the history it owns silently orphaned), so
it is kept in the data directory (``installation-id``), written once; or configured with
``PHOENIX_INSTALLATION_ID`` (a StatefulSet's pod name, say). The first id written is the
one earlier versions derived (host and data directory), so an upgraded installation keeps
its records.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
from pathlib import Path

from phoenix_server.config.settings import Settings
from phoenix_server.domain.errors import ConfigError

log = logging.getLogger("phoenix")

ID_FILE = "installation-id"
VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
"""At most 32 characters (the ``owner`` columns), no spaces or separators."""


def derived_id(data_dir: Path) -> str:
    """What earlier versions used: a digest of the hostname and the data directory."""
    where = f"{socket.gethostname()}\0{data_dir.resolve()}"
    return hashlib.sha256(where.encode()).hexdigest()[:16]


def installation_id(settings: Settings) -> str:
    """The configured id, else the one kept in the data directory (written on first use)."""
    if settings.installation_id is not None:
        return _checked(settings.installation_id, "PHOENIX_INSTALLATION_ID")
    path = settings.data_dir / ID_FILE
    try:
        return _checked(path.read_text(encoding="utf-8").strip(), str(path))
    except (FileNotFoundError, NotADirectoryError):
        pass
    chosen = derived_id(settings.data_dir)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _not_kept(chosen, path, exc)
        return chosen
    try:
        _write_once(path, chosen)
    except FileExistsError:
        # Another Phoenix on this data directory wrote it first: use theirs.
        return _checked(path.read_text(encoding="utf-8").strip(), str(path))
    except OSError as exc:
        _not_kept(chosen, path, exc)
    return chosen


def _not_kept(chosen: str, path: Path, exc: OSError) -> None:
    log.warning(
        "installation id %s not kept in %s (%s): a new hostname will change it; "
        "set PHOENIX_INSTALLATION_ID",
        chosen,
        path,
        exc.strerror or exc,
    )


def _write_once(path: Path, value: str) -> None:
    """Create ``path`` holding ``value``, all at once (a crash leaves no half-written file),
    failing with FileExistsError if it exists."""
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with draft.open("w", encoding="utf-8") as out:
            out.write(value + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.link(draft, path)
    finally:
        draft.unlink(missing_ok=True)


def _checked(value: str, source: str) -> str:
    if not VALID.fullmatch(value):
        raise ConfigError(
            f"installation id {value[:40]!r} from {source} is not valid: 1 to 32 letters, "
            "digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value
