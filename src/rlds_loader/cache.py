"""Small derived files (index, filters, statistics) cached beside the data or in a local cache folder.

A file is named by what it holds and a fingerprint of everything it was derived from, so a stale file is
never read: a change in the data or the config gives a new name. Reads try beside the data first
(`<version folder>/.rlds_loader/`), then the local cache; writes go beside the data when that folder is
writable, else to the local cache (`$RLDS_LOADER_CACHE`, or `~/.cache/rlds_loader`).
"""

from __future__ import annotations

import logging
import os

from rlds_loader.config import short_hash
from rlds_loader.tfds import storage

log = logging.getLogger(__name__)


def default_cache_dir() -> str:
    return os.environ.get("RLDS_LOADER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rlds_loader")


def locations(ds, name: str, cache_dir: str | None = None) -> list[tuple[object, str]]:
    """(file system, path) candidates for a cached file of dataset `ds`, in the order to try them."""
    beside = (ds.fs, storage.join(ds.path, ".rlds_loader", name))
    root = cache_dir or default_cache_dir()
    local_fs, _ = storage.filesystem(root)
    return [beside, (local_fs, os.path.join(root, "index", short_hash(ds.path, 16), name))]


def load(ds, name: str, cache_dir: str | None = None) -> bytes | None:
    """The cached file's bytes, or None when no location has it."""
    for fs, path in locations(ds, name, cache_dir):
        try:
            if fs.exists(path):
                return fs.cat_file(path)
        except Exception as e:  # an unreadable cache is rebuilt, never trusted
            log.warning("ignoring unreadable cache file %s: %s", path, e)
    return None


def store(ds, name: str, data: bytes, cache_dir: str | None = None) -> str | None:
    """Write atomically to the first writable location; returns where, or None when none was writable."""
    for fs, path in locations(ds, name, cache_dir):
        try:
            storage.atomic_write(fs, path, data)
            return path
        except Exception as e:  # read-only data folder: fall back to the local cache
            log.info("cannot write cache file %s (%s); trying the next location", path, e)
    return None
