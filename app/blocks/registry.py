"""The block registry: every Block subclass in this package, found once at start."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import pkgutil
import uuid
from functools import lru_cache
from pathlib import Path

from app.blocks.base import Block

_PACKAGE = "app.blocks"
_NOT_FAMILIES = {"base", "compute", "costs", "registry", "catalog"}


@lru_cache(maxsize=1)
def all_blocks() -> dict[uuid.UUID, Block]:
    """Block id -> the one instance of it. Instantiated once per process."""
    package = importlib.import_module(_PACKAGE)
    blocks: dict[uuid.UUID, Block] = {}
    names: dict[str, uuid.UUID] = {}
    for module_info in pkgutil.iter_modules(package.__path__):
        if module_info.name in _NOT_FAMILIES or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_PACKAGE}.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if not issubclass(cls, Block) or cls is Block or cls.__module__ != module.__name__:
                continue
            if cls.id in blocks:
                raise RuntimeError(f"duplicate block id {cls.id}: {cls.name}")
            if cls.name in names:
                raise RuntimeError(f"duplicate block name {cls.name}")
            blocks[cls.id] = cls()
            names[cls.name] = cls.id
    return blocks


def get_block(block_id: uuid.UUID | str) -> Block | None:
    try:
        key = block_id if isinstance(block_id, uuid.UUID) else uuid.UUID(str(block_id))
    except ValueError:
        return None
    return all_blocks().get(key)


def block_by_name(name: str) -> Block | None:
    return next((b for b in all_blocks().values() if b.name == name), None)


@lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the block package's source: the cache key changes with the code."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
