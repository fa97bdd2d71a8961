"""Playbooks from a folder of YAML files the operator owns (``PHOENIX_PLAYBOOKS_DIR``).

Each ``*.yaml``/``*.yml`` file holds one playbook document (the API's shape) or a list of
them under ``playbooks:``. They are validated exactly as the API validates, except that
``run_command`` is allowed: these files are the operator's. A file that fails validation
is reported with every problem, and the playbooks it held before stay in force; a file
removed takes its playbooks with it. A file playbook's id is derived from its name, so
it keeps its id (and history) across reloads and restarts.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from phoenix_server.config.playbooks import to_playbook, validate_playbook
from phoenix_server.domain.errors import InvalidRequestError, Problem
from phoenix_server.domain.playbooks import Playbook, PlaybookSource
from phoenix_server.domain.services import ServiceCatalog

SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 1024 * 1024


def file_playbook_id(name: str) -> str:
    return "pb-" + hashlib.sha256(f"file:{name}".encode()).hexdigest()[:12]


def stamps(folder: Path) -> dict[Path, tuple[int, int]]:
    """Each playbook file's (mtime, size): what changed since the last look."""
    found: dict[Path, tuple[int, int]] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        if path.suffix in SUFFIXES and path.is_file():
            stat = path.stat()
            found[path] = (stat.st_mtime_ns, stat.st_size)
    return found


def read_playbook_file(
    path: Path, *, catalog: ServiceCatalog, recovery_timeout: float, now: datetime
) -> list[Playbook]:
    """The playbooks of one file; InvalidRequestError naming every problem (with the
    document's position in the file when it holds several)."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InvalidRequestError(f"{path.name}: larger than {MAX_FILE_BYTES} bytes")
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"{path.name}: not YAML: {exc}") from None
    documents: list[Any]
    prefix: list[str]
    if (
        isinstance(data, dict)
        and set(data) == {"playbooks"}
        and isinstance(data["playbooks"], list)
    ):
        documents = data["playbooks"]
        prefix = [f"playbooks[{i}]." for i in range(len(documents))]
    else:
        documents, prefix = [data], [""]
    problems: list[Problem] = []
    found: list[Playbook] = []
    for where, document in zip(prefix, documents, strict=True):
        try:
            doc = validate_playbook(
                document, catalog=catalog, recovery_timeout=recovery_timeout, allow_commands=True
            )
        except InvalidRequestError as exc:
            problems += [Problem(where + p.path, p.message) for p in exc.problems]
            continue
        found.append(
            to_playbook(
                doc,
                playbook_id=file_playbook_id(doc.name),
                created_at=now,
                updated_at=now,
                version=1,
                source=PlaybookSource.FILE,
            )
        )
    names = [p.name for p in found]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(Problem("name", f"'{name}' appears twice in the file"))
    if problems:
        raise InvalidRequestError(f"{path.name}: invalid playbook file", problems)
    return found
