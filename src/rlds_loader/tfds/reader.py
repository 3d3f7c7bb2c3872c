"""Open a TFDS dataset folder and read its episodes: by split spec, in order, or at random.

    ds = open_dataset("gs://bucket/rlds", "droid")            # newest version folder
    ds.split_names, ds.split_size("train"), ds.resolve_split("train[:95%]")
    ds.episode("train[:95%]", 17)                             # the 18th episode of that slice
    for ep in ds.iter_episodes("val"): ...

An episode is one record (one tf.train.Example) of a shard. Position i of a split spec maps to
(split, example index) through `parse_split`, then to (shard, index in shard) through the split's shard
lengths, then to a RecordRef: for TFRecord shards the byte offset of the record's header and its data
length (found by one walk over the shard's record headers, cached per shard), for ArrayRecord shards the
record index. Episode order is TFDS's order for `as_dataset(split, shuffle_files=False)`: the spec's
ranges in order, each in shard order, then record order.
"""

from __future__ import annotations

import bisect
import json
import re
import struct
import threading
from collections.abc import Iterator
from itertools import accumulate
from typing import Any, NamedTuple

import fsspec

from rlds_loader.errors import CorruptRecordError, DatasetNotFoundError, RLDSError
from rlds_loader.tfds import array_record_io, tfrecord
from rlds_loader.tfds.dataset_info import DatasetInfo, read_dataset_info
from rlds_loader.tfds.example_proto import parse_example
from rlds_loader.tfds.splits import SplitRange, parse_split
from rlds_loader.tfds.storage import SequentialReader, filesystem, protocol_prefix, read_file

_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


class RecordRef(NamedTuple):
    """Where one record is. TFRecord: byte offset of the record header and data length. ArrayRecord:
    record index and -1."""

    shard: int
    offset: int
    length: int


def _version_key(name: str) -> tuple[int, int, int] | None:
    m = _VERSION_RE.match(name)
    return None if m is None else (int(m[1]), int(m[2]), int(m[3]))


def _subdirs(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """Names of the folders directly under `path` (empty if `path` does not exist)."""
    try:
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    own = path.rstrip("/")
    names = {e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries
             if e.get("type") == "directory" and e["name"].rstrip("/") != own}  # some stores list the folder
    return sorted(n for n in names if n)


def list_versions(fs: fsspec.AbstractFileSystem, dataset_dir: str) -> list[str]:
    """Version folders ("X.Y.Z") under a dataset folder, oldest first (semantic version order)."""
    versions = [n for n in _subdirs(fs, dataset_dir) if _version_key(n) is not None]
    return sorted(versions, key=_version_key)


def _is_dir(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    try:
        return fs.isdir(path)
    except (FileNotFoundError, OSError):
        return False


def _is_file(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    try:
        return fs.isfile(path)
    except (FileNotFoundError, OSError):
        return False


def open_dataset(data_dir: str, name: str, version: str | None = None,
                 storage_options: dict | None = None) -> RLDSDataset:
    """Open `<data_dir>/<name>/<version>` (name may be "dataset/config"); version None = the newest.

    A missing dataset lists the datasets under data_dir; a missing version lists the versions.
    """
    fs, root = filesystem(data_dir, **(storage_options or {}))
    root = root.rstrip("/") or "/"
    dataset_dir = f"{root}/{name.strip('/')}" if root != "/" else f"/{name.strip('/')}"
    versions = list_versions(fs, dataset_dir)
    if not versions:
        if _subdirs(fs, dataset_dir) or _is_file(fs, f"{dataset_dir}/dataset_info.json") or _is_dir(fs, dataset_dir):
            raise DatasetNotFoundError(
                f"{data_dir}: the folder of dataset {name!r} has no version folders (X.Y.Z); found: "
                f"{', '.join(_subdirs(fs, dataset_dir)) or '(nothing: an interrupted build?)'}")
        found = _subdirs(fs, root)
        raise DatasetNotFoundError(f"no dataset {name!r} in {data_dir}; the datasets there are: "
                                   f"{', '.join(found) or '(none)'}")
    if version is None:
        version = versions[-1]
    elif str(version) not in versions:
        raise DatasetNotFoundError(f"dataset {name!r} in {data_dir} has no version {version}; "
                                   f"its versions are: {', '.join(versions)}")
    return RLDSDataset(fs, f"{dataset_dir}/{version}")


def open_path(path: str, version: str | None = None, storage_options: dict | None = None) -> RLDSDataset:
    """Open a version folder (it holds dataset_info.json) or a dataset folder (it holds version folders;
    the newest, or `version`, is opened). A missing version folder lists the versions there are."""
    fs, p = filesystem(path, **(storage_options or {}))
    p = p.rstrip("/") or "/"
    if version is None and _is_file(fs, f"{p}/dataset_info.json"):
        return RLDSDataset(fs, p)
    parent, _, name = p.rpartition("/")
    if version is None and _version_key(name) is not None:  # ".../<dataset>/<X.Y.Z>" that is not there
        version = name
        parent, _, name = parent.rpartition("/")
    return open_dataset(f"{protocol_prefix(fs)}{parent or '/'}", name, version, storage_options)


class RLDSDataset:
    """One version folder of a TFDS dataset: metadata, shard files, and episode reads.

    Paths returned by `shard_paths` are paths inside `fs` (no protocol); `path` is the version folder
    as a URL for remote file systems. Safe to share between threads.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, version_dir: str):
        self.fs = fs
        self._dir = version_dir.rstrip("/")
        self.path = f"{protocol_prefix(fs)}{self._dir}"
        self.info: DatasetInfo = read_dataset_info(fs, self._dir)
        self.name = self.info.name
        self.version = self.info.version or self._dir.rsplit("/", 1)[-1]
        self.file_format = self.info.file_format
        self.split_names = self.info.split_names
        self.features = self._load_features()
        self._offsets: dict[tuple[str, int], list[tuple[int, int]]] = {}
        self._offsets_lock = threading.Lock()
        self._ranges: dict[str, list[SplitRange]] = {}
        self._paths = {s: [f"{self._dir}/{name}" for name in self.info.shard_filenames(s)]
                       for s in self.split_names}
        self._starts = {s: list(accumulate(self.info.split(s).shard_lengths, initial=0))
                        for s in self.split_names}
        self._array_records = array_record_io.ShardCache()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for worker processes: locks and open array_record readers stay behind."""
        state = self.__dict__.copy()
        del state["_offsets_lock"], state["_array_records"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._offsets_lock = threading.Lock()
        self._array_records = array_record_io.ShardCache()

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={self.split_size(s)}" for s in self.split_names)
        return f"RLDSDataset({self.path!r}, {self.file_format}, {sizes})"

    # --- metadata -------------------------------------------------------------------------------------

    def _load_features(self):
        from rlds_loader.tfds import features as features_lib

        try:
            obj: Any = json.loads(read_file(self.fs, f"{self._dir}/features.json"))
        except FileNotFoundError:
            obj = self.info.raw.get("features")
            if obj is None:
                raise DatasetNotFoundError(f"{self.path}: no features.json (and no features in "
                                           "dataset_info.json)") from None
        except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, or absurdly nested
            raise RLDSError(f"{self.path}/features.json is not valid JSON: {e}") from None
        return features_lib.from_json(obj, label_names=self._label_names)

    def _label_names(self, feature: str) -> list[str] | None:
        """Class names of a ClassLabel feature ("steps/label"), from the file TFDS writes beside
        features.json ("steps-label.labels.txt"); None if there is no such file."""
        from rlds_loader.tfds.features import labels_file_name, parse_labels_file

        try:
            text = read_file(self.fs, f"{self._dir}/{labels_file_name(feature)}")
        except FileNotFoundError:
            return None
        try:
            return parse_labels_file(text.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise RLDSError(f"{self.path}/{labels_file_name(feature)} is not UTF-8 text: {e}") from None

    def split_size(self, split: str) -> int:
        return self.info.split(split).num_examples

    def shard_lengths(self, split: str) -> list[int]:
        return list(self.info.split(split).shard_lengths)

    def shard_paths(self, split: str) -> list[str]:
        self.info.split(split)  # DatasetNotFoundError listing the splits
        return list(self._paths[split])

    def resolve_split(self, spec: str) -> list[SplitRange]:
        """Split spec -> [(split, start, stop)] (see splits.parse_split)."""
        ranges = self._ranges.get(spec)
        if ranges is None:
            sizes = {s: self.split_size(s) for s in self.split_names}
            lengths = {s: self.shard_lengths(s) for s in self.split_names}
            ranges = self._ranges[spec] = parse_split(spec, sizes, lengths)
        return ranges

    def num_episodes(self, spec: str) -> int:
        return sum(stop - start for _, start, stop in self.resolve_split(spec))

    # --- records --------------------------------------------------------------------------------------

    def _shard_path(self, split: str, shard: int) -> str:
        paths = self._paths[split] if split in self._paths else self.shard_paths(split)
        if not 0 <= shard < len(paths):
            raise IndexError(f"split {split!r} has {len(paths)} shards, no shard {shard}")
        return paths[shard]

    def scan_shard(self, split: str, shard: int) -> Iterator[tuple[RecordRef, bytes]]:
        """Every record of one shard, in order, CRC-checked; checks the record count against
        dataset_info.json. A complete scan of a TFRecord shard also fills the offset cache."""
        path = self._shard_path(split, shard)
        expected = self.shard_lengths(split)[shard]
        if self.file_format == "array_record":
            local = array_record_io.local_path(self.fs, path)
            refs = ((RecordRef(shard, i, -1), data) for i, data in array_record_io.scan(local))
        else:
            refs = (
                (RecordRef(shard, off, length), data) for off, length, data in tfrecord.scan(self.fs, path))
        found: list[tuple[int, int]] = []
        for ref, data in refs:
            found.append((ref.offset, ref.length))
            yield ref, data
        self._check_count(path, len(found), expected)
        if self.file_format != "array_record":
            self._offsets[(split, shard)] = found

    @staticmethod
    def _check_count(path: str, found: int, expected: int) -> None:
        if found != expected:
            raise CorruptRecordError(f"{path}: has {found} records, dataset_info.json says {expected} "
                                     "(truncated or replaced file?)", path, None)

    def record_offsets(self, split: str, shard: int) -> list[tuple[int, int]]:
        """[(header offset, data length)] of every record of a TFRecord shard, from one walk over the
        record headers (each header's CRC checked; data is skipped, its CRC is checked when read)."""
        key = (split, shard)
        found = self._offsets.get(key)
        if found is None:
            path = self._shard_path(split, shard)
            found = _walk_headers(self.fs, path)
            self._check_count(path, len(found), self.shard_lengths(split)[shard])
            with self._offsets_lock:
                self._offsets[key] = found
        return found

    def locate(self, split: str, index: int) -> RecordRef:
        """Example `index` of a split -> its RecordRef."""
        lengths = self.info.split(split).shard_lengths
        starts = self._starts[split]
        if not 0 <= index < starts[-1]:
            raise IndexError(f"split {split!r} has {starts[-1]} episodes, no episode {index}")
        shard = bisect.bisect_right(starts, index) - 1
        while lengths[shard] == 0:  # skip empty shards (bisect lands on the last of equal starts)
            shard += 1
        local = index - starts[shard]
        if self.file_format == "array_record":
            return RecordRef(shard, local, -1)
        offset, length = self.record_offsets(split, shard)[local]
        return RecordRef(shard, offset, length)

    def read_record(self, split: str, ref: RecordRef) -> bytes:
        """One record's bytes (one read; CRC-checked for TFRecord)."""
        path = self._shard_path(split, ref.shard)
        if self.file_format == "array_record":
            return self._array_records.get(array_record_io.local_path(self.fs, path)).read(ref.offset)
        return tfrecord.read_record(self.fs, path, ref.offset, ref.length if ref.length >= 0 else None)

    def decode(self, data: bytes, keys=None) -> dict:
        """A record's bytes -> nested dict of numpy arrays (see features.FeaturesDict.decode_example)."""
        return self.features.decode_example(parse_example(data), keys=keys)

    # --- episodes -------------------------------------------------------------------------------------

    def _position(self, spec: str, i: int) -> tuple[str, int]:
        ranges = self.resolve_split(spec)
        n = sum(stop - start for _, start, stop in ranges)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError(f"{spec!r} has {n} episodes, no episode {i}")
        for split, start, stop in ranges:
            if j < stop - start:
                return split, start + j
            j -= stop - start
        raise AssertionError("unreachable")

    def episode(self, spec: str, i: int, keys=None) -> dict:
        """Episode i (negative: from the end) of a split spec, decoded."""
        split, index = self._position(spec, i)
        return self.decode(self.read_record(split, self.locate(split, index)), keys=keys)

    def iter_records(self, spec: str) -> Iterator[tuple[str, int, RecordRef, bytes]]:
        """(split, example index, ref, bytes) of every episode of a spec, in order, read sequentially."""
        for split, start, stop in self.resolve_split(spec):
            if start >= stop:
                continue
            first = 0
            for shard, length in enumerate(self.shard_lengths(split)):
                lo, hi = max(start, first), min(stop, first + length)
                if lo < hi:
                    for k, (ref, data) in enumerate(self.scan_shard(split, shard)):
                        if k >= hi - first:
                            break
                        if k >= lo - first:
                            yield split, first + k, ref, data
                first += length

    def iter_episodes(self, spec: str, keys=None) -> Iterator[dict]:
        """Every episode of a split spec, decoded, in TFDS's order."""
        for _, _, _, data in self.iter_records(spec):
            yield self.decode(data, keys=keys)


def _walk_headers(fs: fsspec.AbstractFileSystem, path: str) -> list[tuple[int, int]]:
    """[(offset, data length)] of each record of a TFRecord file, reading only the 12-byte headers
    (uint64 length + uint32 masked CRC of it; see tfrecord.py)."""
    f = SequentialReader(fs, path, block_size=4 << 20)  # block reads, retried on transient errors
    size = f.size
    out = []
    offset = 0
    while offset < size:
        f.seek(offset)
        header = f.read(tfrecord.HEADER)
        if len(header) < tfrecord.HEADER:
            raise CorruptRecordError(f"{path}: truncated record header at byte offset {offset}",
                                     path, offset)
        length, crc = struct.unpack("<QI", header)
        if tfrecord.masked_crc(header[:8]) != crc:
            raise CorruptRecordError(f"{path}: record length CRC mismatch at byte offset {offset}",
                                     path, offset)
        end = offset + tfrecord.HEADER + length + tfrecord.FOOTER
        if end > size:
            raise CorruptRecordError(
                f"{path}: truncated record at byte offset {offset} (expected {length} data bytes, "
                f"the file ends at {size})", path, offset)
        out.append((offset, length))
        offset = end
    return out


__all__ = ["RecordRef", "RLDSDataset", "open_dataset", "open_path", "list_versions"]
