"""Names and stamps the way Kubernetes makes them."""

from __future__ import annotations

import datetime
import json
import random
from typing import Any

# k8s.io/apimachinery/pkg/util/rand: no vowels (no words) and no look-alike characters.
ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


def random_suffix(length: int = 5) -> str:
    """What the apiserver appends to a ``generateName``."""
    return "".join(random.choice(ALPHANUMS) for _ in range(length))


def safe_encode(text: str) -> str:
    """``rand.SafeEncodeString``: each character mapped into the alphabet above."""
    return "".join(ALPHANUMS[ord(c) % len(ALPHANUMS)] for c in text)


def fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def template_hash(template: Any, collision_count: int = 0) -> str:
    """A ``pod-template-hash``: FNV-32a of the template, safe-encoded (Kubernetes hashes Go's
    dump of the struct; the canonical JSON here gives other digits but the same properties:
    equal templates, equal hash)."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    return safe_encode(str(fnv32a(data)))


def timestamp(moment: datetime.datetime | None = None) -> str:
    """RFC 3339 to the second, as ``metav1.Time`` is serialised."""
    moment = moment or datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def after(seconds: float) -> str:
    return timestamp(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds))


def parse_timestamp(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
