"""Write episodes as a TFDS dataset folder that TFDS itself (and our reader) can load.

    DATA_DIR/NAME/VERSION/
        NAME-SPLIT.tfrecord-00000-of-00004 ...   shards (or .array_record-...)
        features.json                             feature tree (`FeatureConnector.to_json`)
        *.labels.txt                              ClassLabel names
        dataset_info.json                         name, version, file format, splits and shard lengths

Each record is one episode: `features.encode_example(episode)` serialized as a tf.train.Example. A split's
episodes go to its shards in order, in contiguous chunks (shard i holds episodes [i*n/k, (i+1)*n/k)),
unlike TFDS which shuffles them by key hash; the order given is the order on disk.

Crash safety: an old dataset_info.json is deleted first and the new one is written last, after every
shard, so no dataset_info.json ever points at missing or half-written shards. Each file appears whole
(local: temporary file + rename; object stores: a PUT is atomic).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

import fsspec
import numpy as np

from rlds_loader.tfds import storage
from rlds_loader.tfds.example_proto import serialize_example
from rlds_loader.tfds.features import ClassLabel, FeaturesDict, Tensor, labels_file_name
from rlds_loader.tfds.tfrecord import encode_record

FILE_FORMATS = ("tfrecord", "array_record")
FILEPATH_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
_NAME = re.compile(r"^[A-Za-z0-9_.]+$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def shard_name(name: str, split: str, file_format: str, index: int, num_shards: int) -> str:
    """TFDS's shard file name: `NAME-SPLIT.FORMAT-00003-of-00008` (at least 5 digits)."""
    digits = max(len(str(num_shards)), 5)
    return f"{name}-{split}.{file_format}-{index:0{digits}d}-of-{num_shards:0{digits}d}"


def shard_bounds(num_records: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) record ranges of each shard, sizes differing by at most one."""
    return [(i * num_records // num_shards, (i + 1) * num_records // num_shards) for i in range(num_shards)]


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return storage.protocol_prefix(fs) == ""


@contextlib.contextmanager
def _open_whole(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[IO[bytes]]:
    """A binary file that appears at `path` only once closed without error."""
    if _is_local(fs):
        folder = os.path.dirname(os.path.abspath(path))
        tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    else:
        with fs.open(path, "wb") as f:
            yield f


class _TFRecordShard:
    def __init__(self, fs: fsspec.AbstractFileSystem, path: str):
        self._ctx = _open_whole(fs, path)
        self._file = self._ctx.__enter__()

    def write(self, record: bytes) -> None:
        self._file.write(encode_record(record))

    def close(self, error: BaseException | None = None) -> None:
        if error is None:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(type(error), error, error.__traceback__)


class _ArrayRecordShard:
    """array_record writes only local files: write beside the target (or in a temp dir) then move."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str):
        from array_record.python.array_record_module import ArrayRecordWriter

        self._fs, self._path = fs, path
        if _is_local(fs):
            self._tmp = os.path.join(
                os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}"
            )
        else:
            self._tmp = os.path.join(tempfile.mkdtemp(prefix="rlds_loader_"), os.path.basename(path))
        # group_size:1 makes every record its own chunk group: what TFDS writes, for random access
        self._writer = ArrayRecordWriter(self._tmp, "group_size:1")

    def write(self, record: bytes) -> None:
        self._writer.write(record)

    def close(self, error: BaseException | None = None) -> None:
        try:
            self._writer.close()
            if error is None:
                if _is_local(self._fs):
                    os.replace(self._tmp, self._path)
                else:
                    self._fs.put_file(self._tmp, self._path)
        finally:
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)
            if not _is_local(self._fs):
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.dirname(self._tmp))


def _write_split(
    fs: fsspec.AbstractFileSystem,
    folder: str,
    name: str,
    split: str,
    records: Iterable[bytes],
    num_records: int | None,
    num_shards: int,
    file_format: str,
) -> tuple[list[int], int, list[str]]:
    """Write one split's records into `num_shards` contiguous shards -> (shard lengths, bytes, files).

    `num_records` None (allowed with one shard only) streams every record without counting them first.
    """
    shard_cls = _TFRecordShard if file_format == "tfrecord" else _ArrayRecordShard
    if num_records is None and num_shards != 1:
        raise ValueError("the number of records is needed to split them into several shards")
    quotas = [None] if num_records is None else [end - start for start, end in shard_bounds(num_records, num_shards)]
    files = [shard_name(name, split, file_format, i, num_shards) for i in range(num_shards)]
    it = iter(records)
    num_bytes = 0
    lengths = []
    for quota, fname in zip(quotas, files, strict=True):
        shard = shard_cls(fs, storage.join(folder, fname))
        written = 0
        try:
            for record in itertools.islice(it, quota):
                shard.write(record)
                num_bytes += len(record)
                written += 1
        except BaseException as e:
            shard.close(e)
            raise
        shard.close()
        if quota is not None and written != quota:
            raise ValueError(f"split {split!r} yielded {sum(lengths) + written} episodes, its len() is {num_records}")
        lengths.append(written)
    if next(it, None) is not None:
        raise ValueError(f"split {split!r} yielded more episodes than its len() ({num_records})")
    return lengths, num_bytes, files


def _label_files(features: FeaturesDict) -> dict[str, str]:
    return {
        labels_file_name(leaf.path): "\n".join(leaf.feature.names) + "\n"
        for leaf in features.leaves()
        if isinstance(leaf.feature, ClassLabel) and leaf.feature.names
    }


def check_tfds_can_read(features: FeaturesDict) -> None:
    """Refuse schemas TFDS writes or accepts but cannot read back, so that what we write TFDS reads: a
    uint32 Tensor with zlib/bytes encoding (TF's decode_raw has no uint32), a fixed-length Sequence inside
    another Sequence or the steps (TFDS's ragged decoding fails), an unencoded Tensor with a 0-sized
    dimension under a variable length (TF's parser divides by zero)."""
    for leaf in features.leaves():
        f = leaf.feature
        if isinstance(f, Tensor) and f.encoding != "none" and np.dtype(f.dtype) == np.uint32:
            raise ValueError(f"feature {leaf.path!r}: TFDS cannot read a uint32 Tensor with encoding "
                             f"{f.encoding!r} (TF's decode_raw has no uint32); use encoding 'none' or int64")
        if any(d is not None for d in tuple(leaf.outer)[1:]):
            raise ValueError(f"feature {leaf.path!r}: TFDS cannot read a fixed-length Sequence inside a Sequence "
                             "or the steps; give it length=None")
        shape = tuple(leaf.outer) + tuple(f.shape)
        if isinstance(f, Tensor) and f.encoding == "none" and 0 in shape and None in shape:
            raise ValueError(f"feature {leaf.path!r}: TFDS cannot read an unencoded Tensor with a 0-sized "
                             f"dimension under a variable one ({shape}); use encoding 'zlib' or 'bytes'")


def write_dataset(
    data_dir: str,
    name: str,
    features: FeaturesDict,
    splits: Mapping[str, Iterable[dict]],
    *,
    version: str = "1.0.0",
    num_shards: int | Mapping[str, int] = 1,
    file_format: str = "tfrecord",
    description: str = "",
    storage_options: dict | None = None,
) -> str:
    """Write `splits` ({split name: episodes}) as DATA_DIR/NAME/VERSION/ -> that folder's path or URL.

    Episodes are nested dicts as `FeaturesDict.encode_example` takes them. `num_shards` is per split or one
    number for all. A split whose iterable has no `len()` is streamed into a single shard, or serialized
    to memory first when it has several (the shard boundaries depend on the count). Files of an earlier
    write with other shard counts are removed.
    """
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format must be one of {FILE_FORMATS}, got {file_format!r}")
    if not _NAME.match(name):
        raise ValueError(f"dataset name {name!r} may only contain letters, digits, '_' and '.'")
    if not _VERSION.match(version):
        raise ValueError(f"version must look like 1.0.0, got {version!r}")
    check_tfds_can_read(features)
    fs, root = storage.filesystem(data_dir, **(storage_options or {}))
    folder = storage.join(root, name, version)
    fs.makedirs(folder, exist_ok=True)
    info_path = storage.join(folder, "dataset_info.json")
    if fs.exists(info_path):  # from here on the folder is not a dataset until the new info is written
        fs.rm(info_path)

    split_infos = []
    written: set[str] = set()
    for split, episodes in splits.items():
        if not re.match(r"^\w+$", split):
            raise ValueError(f"split name {split!r} may only contain letters, digits and '_'")
        shards = num_shards[split] if isinstance(num_shards, Mapping) else num_shards
        if int(shards) < 1:
            raise ValueError(f"split {split!r}: num_shards must be >= 1, got {shards}")
        records: Iterable[bytes] = (serialize_example(features.encode_example(ep)) for ep in episodes)
        try:
            count: int | None = len(episodes)  # type: ignore[arg-type]
        except TypeError:
            count = None
            if int(shards) > 1:  # shard boundaries need the count: serialize to memory first
                records = list(records)
                count = len(records)
        lengths, num_bytes, files = _write_split(fs, folder, name, split, records, count, int(shards), file_format)
        written.update(files)
        if not sum(lengths):
            raise ValueError(f"split {split!r} has no examples: TFDS cannot read an empty split (its own writer "
                             "refuses one too); leave the split out")
        split_infos.append(
            {
                "filepathTemplate": FILEPATH_TEMPLATE,
                "name": split,
                "numBytes": str(num_bytes),
                "shardLengths": [str(n) for n in lengths],
            }
        )

    shard_re = re.compile(rf"^{re.escape(name)}-\w+\.({'|'.join(FILE_FORMATS)})-\d{{5,}}-of-\d{{5,}}$")
    for path in fs.ls(folder, detail=False):
        base = path.rstrip("/").rsplit("/", 1)[-1]
        if shard_re.match(base) and base not in written:
            fs.rm(path)

    for fname, text in _label_files(features).items():
        storage.atomic_write(fs, storage.join(folder, fname), text.encode("utf-8"))
    features_json = json.dumps(features.to_json(), indent=4, sort_keys=True)
    storage.atomic_write(fs, storage.join(folder, "features.json"), features_json.encode("utf-8"))
    info: dict[str, Any] = {
        "fileFormat": file_format,
        "moduleName": __name__,
        "name": name,
        "splits": split_infos,
        "version": version,
    }
    if description:
        info["description"] = description
    storage.atomic_write(fs, info_path, json.dumps(info, indent=2, sort_keys=True).encode("utf-8"))
    return storage.join(str(data_dir), name, version)
