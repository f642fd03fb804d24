"""Versioned schema migrations: ``<backend>/NNNN_<name>.sql`` files shipped as package data.

Each backend's runner (``migrate()``) applies the files whose version is not yet in
``schema_migrations``, in version order, and records each one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

BACKENDS = ("sqlite", "postgres")
_FILE_NAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(backend: str) -> list[Migration]:
    """The migrations of ``backend`` ("sqlite" or "postgres"), in version order."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown store backend {backend!r}; expected one of {BACKENDS}")
    found: dict[int, Migration] = {}
    for entry in resources.files(__package__).joinpath(backend).iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match is None:
            continue
        version = int(match["version"])
        if version in found:
            raise ValueError(f"two {backend} migrations with version {version}")
        found[version] = Migration(version, match["name"], entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]
