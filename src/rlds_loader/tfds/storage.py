"""Storage access through fsspec: one place that turns a path or URL into bytes.

Local paths, `gs://`, `s3://`, `memory://` and any other fsspec protocol work the same way. Reads are
positional (offset, length) so that a single record or a part of one can be fetched without reading the
file; file systems are cached per protocol and options by fsspec itself.
"""

from __future__ import annotations

import os
import posixpath
import uuid

import fsspec
from fsspec.core import url_to_fs


def filesystem(url: str, **storage_options) -> tuple[fsspec.AbstractFileSystem, str]:
    """URL or local path -> (file system, path inside it)."""
    return url_to_fs(str(url), **storage_options)


def join(base: str, *parts: str) -> str:
    """Join path parts, keeping a URL's protocol intact."""
    if "://" in base:
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def protocol_prefix(fs: fsspec.AbstractFileSystem) -> str:
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return "" if proto in ("file", "local") else f"{proto}://"


def read_range(fs: fsspec.AbstractFileSystem, path: str, offset: int, length: int) -> bytes:
    """Exactly `length` bytes of `path` from `offset` (fewer only at the end of the file)."""
    return fs.cat_file(path, start=offset, end=offset + length)


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write `data` to `path` so a reader sees the old content or the new, never a part.

    Local: write a temporary file in the same folder, fsync, rename over the target. Object stores: one
    PUT is already atomic (the object appears whole or not at all), so a single `pipe_file` is used.
    """
    if protocol_prefix(fs) == "":
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        parent = posixpath.dirname(path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(path, data)
