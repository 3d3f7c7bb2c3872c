"""Storage access through fsspec: one place that turns a path or URL into bytes.

Local paths, `gs://`, `s3://`, `memory://` and any other fsspec protocol work the same way. Reads are
positional (offset, length) so that a single record or a part of one can be fetched without reading the
file; file systems are cached per protocol and options by fsspec itself.

Every read here goes through the retry policy of `retry.py`: transient failures (dropped connections,
timeouts, HTTP 5xx, throttling) are tried again with bounded, jittered exponential backoff, and a read that
keeps failing ends in a `StorageReadError` naming the object URL and the byte range. No read allocates more
than the file holds, whatever length it is asked for (lengths can come from corrupt record headers).
"""

from __future__ import annotations

import os
import posixpath
import time
import uuid

import fsspec
from fsspec.core import url_to_fs

from rlds_loader.tfds import retry

MAX_READ_CHUNK = 64 << 20  # a longer range is read in chunks of this size, clamped to the file's size


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


def object_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URL of `path` on `fs` (a plain path for local files), for messages."""
    return f"{protocol_prefix(fs)}{path}"


def read_range(fs: fsspec.AbstractFileSystem, path: str, offset: int, length: int) -> bytes:
    """Exactly `length` bytes of `path` from `offset` (fewer only at the end of the file), with retries.

    A range longer than MAX_READ_CHUNK is first clamped to the file's size, then read chunk by chunk: a bogus
    length never turns into a huge allocation.
    """
    offset, length = int(offset), int(length)
    if length <= 0:
        return b""
    policy, url = retry.get_policy(), object_url(fs, path)
    if length <= MAX_READ_CHUNK:
        return policy.call(lambda: fs.cat_file(path, start=offset, end=offset + length),
                           url=url, start=offset, end=offset + length)
    end = min(offset + length, file_size(fs, path))
    parts = []
    for lo in range(offset, end, MAX_READ_CHUNK):
        hi = min(lo + MAX_READ_CHUNK, end)
        chunk = policy.call(lambda lo=lo, hi=hi: fs.cat_file(path, start=lo, end=hi),
                            url=url, start=lo, end=hi)
        parts.append(chunk)
        if len(chunk) < hi - lo:  # the file is shorter than it was
            break
    return b"".join(parts)


def read_ranges(fs: fsspec.AbstractFileSystem, paths: list[str], starts: list[int],
                ends: list[int]) -> list[bytes]:
    """The bytes [starts[i], ends[i]) of paths[i] for every i, fetched together with `fs.cat_ranges`
    (concurrent requests on object stores). Ranges that fail transiently are fetched again, together, under
    the retry policy; a permanent error (e.g. FileNotFoundError) is raised as is."""
    paths, starts, ends = list(paths), [int(s) for s in starts], [int(e) for e in ends]
    out: list[bytes] = [b""] * len(paths)
    policy = retry.get_policy()
    pending = list(range(len(paths)))
    t0 = time.monotonic()
    attempt = 0
    while pending:
        attempt += 1
        try:
            got = fs.cat_ranges([paths[i] for i in pending], [starts[i] for i in pending],
                                [ends[i] for i in pending], on_error="return")
        except Exception as e:  # the whole call failed (e.g. the event loop's connection pool)
            got = [e] * len(pending)
        failed = []
        for i, data in zip(pending, got, strict=True):
            if isinstance(data, BaseException):
                if not retry.is_transient(data):
                    raise data
                failed.append((i, data))
            else:
                out[i] = data
        if failed:
            i, error = failed[0]
            policy.backoff(attempt, t0, error, url=object_url(fs, paths[i]), start=starts[i], end=ends[i])
        pending = [i for i, _ in failed]
    return out


def read_file(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    """A whole (small) file, with retries; FileNotFoundError when it does not exist."""
    return retry.get_policy().call(lambda: fs.cat_file(path), url=object_url(fs, path))


def file_size(fs: fsspec.AbstractFileSystem, path: str) -> int:
    """The file's size in bytes, with retries."""
    return int(retry.get_policy().call(lambda: fs.size(path), url=object_url(fs, path)))


class SequentialReader:
    """Read a file front to back, `read(n)` at a time; every fetch is retried under the retry policy (one
    that keeps failing ends in a StorageReadError naming the object and the byte range).

    The file's size is looked up once: `read(n)` returns at most the bytes left (fewer than n only at the
    end, or when the file shrank since: the caller sees the truncation), so a length field can never make
    it allocate more than the file holds.

    Copies are what a scan costs (records are MBs, usually in the page cache), so there are as few as can be:
    short reads (headers, small records) are served from a buffered block; a long read is fetched directly,
    in one read of exactly the bytes it still needs, never through the block.
    Object stores: blocks of `block_size` bytes via `read_range`, and no byte is fetched twice: the buffered
    head of a read that runs past the block is joined (from a memoryview, one copy) to the rest.
    Local files: `os.pread` on one open file (the OS reads ahead) and a small block; a long read re-reads
    its buffered head from the page cache instead of joining, so its bytes are copied once.
    """

    LOCAL_BLOCK = 64 << 10  # the block for local files: headers and small records

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, block_size: int = 8 << 20):
        self.fs, self.path, self.block_size = fs, path, max(1, int(block_size))
        self.url = object_url(fs, path)
        self.size = file_size(fs, path)
        self.pos = 0  # offset of the next byte read() returns
        self._buf, self._buf_start = b"", 0
        self._file = None
        if protocol_prefix(fs) == "":
            self._file = retry.get_policy().call(lambda: open(path, "rb", buffering=0), url=self.url)
            self.block_size = min(self.block_size, self.LOCAL_BLOCK)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> SequentialReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def seek(self, pos: int) -> None:
        """Continue reading at byte `pos` (the buffered block is kept if it holds `pos`)."""
        self.pos = max(0, min(int(pos), self.size))

    def read(self, n: int) -> bytes:
        n = max(0, min(int(n), self.size - self.pos))
        off = self.pos - self._buf_start
        avail = len(self._buf) - off if 0 <= off < len(self._buf) else 0
        if n <= avail:
            data = self._buf if n == len(self._buf) else self._buf[off:off + n]
        elif self._file is not None or not avail:  # local, or nothing buffered: read from pos
            if n >= self.block_size:
                data = self._fetch(self.pos, n)
            else:
                self._fill(self.pos)
                data = self._buf[:n]
        else:  # object store, the block holds the head: fetch only the rest
            head, start, need = memoryview(self._buf)[off:], self.pos + avail, n - avail
            if need >= self.block_size:
                data = b"".join((head, self._fetch(start, need)))
            else:
                self._fill(start)
                data = b"".join((head, memoryview(self._buf)[:need]))
        self.pos += len(data)
        return data

    def _fill(self, start: int) -> None:
        """Buffer the block that starts at `start`."""
        self._buf, self._buf_start = self._fetch(start, min(self.block_size, self.size - start)), start

    def _fetch(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length) of the file (fewer only if it ends first), with retries."""
        if self._file is None:
            return read_range(self.fs, self.path, offset, length)
        fd = self._file.fileno()
        data = retry.get_policy().call(lambda: os.pread(fd, length, offset), url=self.url, start=offset,
                                       end=offset + length)
        if 0 < len(data) < length:  # a short read before the end (e.g. over 2 GB at once): read on
            data += self._fetch(offset + len(data), length - len(data))
        return data


# A temp file this old was left by a writer that was killed (a write takes milliseconds); younger ones may
# still belong to a concurrent writer and are left alone.
STALE_TEMP_S = 600.0


def _remove_stale_temps(folder: str, name: str) -> None:
    """Delete `.{name}.tmp-*` files in `folder` older than STALE_TEMP_S (left by killed atomic writes)."""
    prefix, now = f".{name}.tmp-", time.time()
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_S:
                os.unlink(entry.path)
        except OSError:
            pass  # gone already, or not ours to delete: never fail a save over it


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
        _remove_stale_temps(folder, os.path.basename(path))
    else:
        parent = posixpath.dirname(path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(path, data)
