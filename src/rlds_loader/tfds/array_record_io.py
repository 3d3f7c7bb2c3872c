"""ArrayRecord shards (TFDS `file_format="array_record"`): record count, random reads, sequential reads.

A record is addressed by its index in the file (TFDS writes with group_size:1, so any record is one
seek away). Reading goes through the `array_record` package, whose C++ reader opens files by local path
only: a dataset on an object store must be mounted (gcsfuse, s3fs-fuse, ...) or copied locally first.
Errors from the C++ reader become CorruptRecordError naming the file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import fsspec

from rlds_loader.errors import CorruptRecordError, RLDSError
from rlds_loader.tfds.storage import protocol_prefix

_RANDOM_ACCESS = "readahead_buffer_size:0"  # what array_record recommends (and grain uses) for random reads
_SEQUENTIAL_CHUNK = 64  # records per read when scanning a shard in order


def local_path(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The OS path of `path`, or RLDSError if `fs` is not the local file system."""
    if protocol_prefix(fs) != "":
        raise RLDSError(
            f"{protocol_prefix(fs)}{path}: array_record shards can only be read from a local or mounted path "
            "(the array_record reader does not read through fsspec); mount the bucket (gcsfuse, s3fs-fuse) "
            "or copy the dataset to a local folder and open that")
    return path


def _reader(path: str, options: str = ""):
    from array_record.python.array_record_module import ArrayRecordReader

    try:
        reader = ArrayRecordReader(path, options)
    except (RuntimeError, ValueError, OSError) as e:
        raise CorruptRecordError(f"{path}: cannot open as an array_record file: {e}", path, 0) from e
    if not reader.ok():  # e.g. a truncated file: no footer, so no index (the reader reports 0 records)
        raise CorruptRecordError(f"{path}: cannot open as an array_record file (truncated or not an "
                                 "array_record file)", path, 0)
    return reader


class ArrayRecordShard:
    """One shard opened for random access; `read` is safe to call from several threads."""

    def __init__(self, path: str):
        self.path = path
        self._reader = _reader(path, _RANDOM_ACCESS)
        self.num_records = self._reader.num_records()

    def read(self, index: int) -> bytes:
        if not 0 <= index < self.num_records:
            raise IndexError(f"{self.path}: record {index} out of range (the file has {self.num_records})")
        try:
            return self._reader.read([index])[0]
        except (RuntimeError, ValueError, OSError, IndexError) as e:
            raise CorruptRecordError(f"{self.path}: cannot read record {index}: {e}", self.path, index) from e


class ShardCache:
    """Open readers per shard path, created once (thread-safe) and reused."""

    def __init__(self):
        self._shards: dict[str, ArrayRecordShard] = {}
        self._lock = threading.Lock()

    def get(self, path: str) -> ArrayRecordShard:
        shard = self._shards.get(path)
        if shard is None:
            with self._lock:
                shard = self._shards.get(path)
                if shard is None:
                    shard = self._shards[path] = ArrayRecordShard(path)
        return shard


def scan(path: str) -> Iterator[tuple[int, bytes]]:
    """(record index, data) for every record of the file, in order."""
    reader = _reader(path)
    n = reader.num_records()
    for start in range(0, n, _SEQUENTIAL_CHUNK):
        stop = min(n, start + _SEQUENTIAL_CHUNK)
        try:
            chunk = reader.read(start, stop)
        except (RuntimeError, ValueError, OSError, IndexError) as e:
            raise CorruptRecordError(f"{path}: cannot read records {start}..{stop - 1}: {e}",
                                     path, start) from e
        yield from zip(range(start, stop), chunk, strict=True)
    try:
        reader.close()
    except RuntimeError as e:  # close() reports a failure of the reader without a message
        raise CorruptRecordError(f"{path}: the array_record reader failed: {e or 'unknown error'}",
                                 path, None) from e
