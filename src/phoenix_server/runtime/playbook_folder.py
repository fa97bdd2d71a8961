"""The operator's playbook folder (``PHOENIX_PLAYBOOKS_DIR``): its files are read whenever
one changes (a stat of each file every second), validated, and stored as file playbooks.
A file that fails validation keeps its previous playbooks in force and is named in
``/health`` until it is fixed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from phoenix_server.config import playbook_files
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.errors import InvalidRequestError, UnavailableError
from phoenix_server.domain.playbooks import Playbook
from phoenix_server.domain.services import ServiceCatalog
from phoenix_server.store import playbooks
from phoenix_server.store.database import Store

log = logging.getLogger("phoenix")

PLAYBOOK_FILES_INTERVAL = 1.0
"""Seconds between looks at the playbook folder (a stat of each file: cheap)."""
FOLDER = "(folder)"
"""The key of a problem with the folder itself rather than one file."""


class PlaybookFolder:
    def __init__(
        self,
        folder: Path,
        *,
        catalog: ServiceCatalog,
        store: Store,
        clock: Clock,
        recovery_timeout: float,
        changed: Callable[[], Awaitable[None]],
    ) -> None:
        self._folder = folder
        self._catalog = catalog
        self._store = store
        self._clock = clock
        self._recovery_timeout = recovery_timeout
        self._changed = changed
        """Called once the stored playbooks changed (the engine reloads the active ones)."""
        self.problems: dict[str, str] = {}
        """Playbook files that failed validation (their previous playbooks stay in force)."""
        self._playbooks: dict[Path, list[Playbook]] = {}
        self._stamps: dict[Path, tuple[int, int]] = {}

    async def watch(self) -> None:
        while True:
            await self._clock.sleep(PLAYBOOK_FILES_INTERVAL)
            await self.load_safely()

    async def load_safely(self) -> None:
        try:
            await self.load()
        except Exception as exc:
            # A folder made unreadable, a file gone mid-read: say so, look again later.
            self.problems[FOLDER] = f"cannot read the playbook folder: {exc}"
            log.exception("cannot load playbook files; trying again")

    async def load(self) -> None:
        """Read the folder if anything in it changed; store what is valid."""
        now_stamps = await asyncio.to_thread(playbook_files.stamps, self._folder)
        if now_stamps == self._stamps:
            return
        self.problems.pop(FOLDER, None)
        for path in set(self._playbooks) - set(now_stamps):
            del self._playbooks[path]  # removed: its playbooks go with it
        names = {path.name for path in now_stamps}
        for name in [n for n in self.problems if n not in names]:
            del self.problems[name]
        for path, stamp in now_stamps.items():
            if self._stamps.get(path) == stamp:
                continue
            try:
                self._playbooks[path] = playbook_files.read_playbook_file(
                    path,
                    catalog=self._catalog,
                    recovery_timeout=self._recovery_timeout,
                    now=self._clock.now(),
                )
                self.problems.pop(path.name, None)
                log.info("playbook file %s: %d playbook(s)", path.name, len(self._playbooks[path]))
            except (InvalidRequestError, OSError) as exc:
                detail = str(exc) if isinstance(exc, OSError) else exc.message
                if isinstance(exc, InvalidRequestError) and exc.problems:
                    detail += ": " + "; ".join(f"{p.path}: {p.message}" for p in exc.problems)
                self.problems[path.name] = detail
                log.error("playbook file %s kept at its previous version: %s", path.name, detail)
        every = [p for found in self._playbooks.values() for p in found]
        try:
            refused = await self._store.write(playbooks.sync_file_playbooks, every)
        except UnavailableError as exc:
            log.warning("playbook files not stored yet: %s", exc.message)
            return  # the next look tries again
        for why in refused:
            log.error("playbook file playbook not taken: %s", why)
        self._stamps = now_stamps
        await self._changed()
