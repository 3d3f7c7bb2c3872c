"""`dataset_info.json` -> DatasetInfo: name, version, file format, splits and the shard file names.

TFDS writes the JSON form of its `DatasetInfo` proto (int64 fields as strings). What matters for reading:
  name, version, configName            -> where the data is and what the shard files are called
  fileFormat                            -> "tfrecord" (also when absent, as in datasets written before the
                                           field existed) or "array_record"
  splits[i].name / shardLengths / numBytes / filepathTemplate
        -> one shard file per entry of shardLengths, named by the template (absent = TFDS's default
           "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")

Shard names follow TFDS's `naming.ShardedFileTemplate`: SHARD_INDEX and NUM_SHARDS are zero-padded to
max(5, digits of the shard count), SHARD_X_OF_Y is "<index>-of-<count>", FILEFORMAT is the file suffix.
Pure: no I/O except `read_dataset_info`.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec

from rlds_loader.errors import DatasetNotFoundError, RLDSError
from rlds_loader.tfds.storage import read_file

DEFAULT_FILEPATH_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
FILE_FORMATS = ("tfrecord", "array_record")  # the formats this package reads (TFDS also has riegeli, parquet)


@dataclass(frozen=True)
class SplitInfo:
    """One split: its shard lengths (examples per shard file), byte size and shard file name template."""

    name: str
    shard_lengths: tuple[int, ...]
    num_bytes: int = 0
    filepath_template: str = DEFAULT_FILEPATH_TEMPLATE

    @property
    def num_examples(self) -> int:
        return sum(self.shard_lengths)

    @property
    def num_shards(self) -> int:
        return len(self.shard_lengths)


@dataclass(frozen=True)
class DatasetInfo:
    """The parts of `dataset_info.json` a reader needs; `raw` keeps the whole JSON object."""

    name: str
    version: str
    file_format: str
    splits: dict[str, SplitInfo]  # in the order of dataset_info.json (TFDS's order for the split "all")
    config_name: str = ""
    description: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def split_names(self) -> list[str]:
        return list(self.splits)

    def split(self, name: str) -> SplitInfo:
        """The split called `name`; DatasetNotFoundError listing the splits there are."""
        try:
            return self.splits[name]
        except KeyError:
            raise DatasetNotFoundError(
                f"dataset {self.name!r} {self.version} has no split {name!r}; "
                f"its splits are: {', '.join(self.splits) or '(none)'}") from None

    def shard_filenames(self, split: str) -> list[str]:
        """File names (relative to the version folder) of the split's shards, in TFDS's reading order."""
        s = self.split(split)
        return shard_filenames(self.name, s.name, self.file_format, s.num_shards, s.filepath_template)


def shard_filename(dataset: str, split: str, file_format: str, shard_index: int, num_shards: int,
                   template: str = DEFAULT_FILEPATH_TEMPLATE) -> str:
    """One shard's file name, formatted as TFDS's `ShardedFileTemplate.relative_filepath` does."""
    digits = max(5, len(str(num_shards)))
    index = f"{shard_index:0{digits}d}"
    count = f"{num_shards:0{digits}d}"
    mappings = {"DATASET": dataset, "SPLIT": split, "FILEFORMAT": file_format, "SHARD_INDEX": index,
                "NUM_SHARDS": count, "SHARD_X_OF_Y": f"{index}-of-{count}"}
    template = template or DEFAULT_FILEPATH_TEMPLATE
    try:
        specs = [spec for _, _, spec, _ in string.Formatter().parse(template) if spec]
        if any("{" in spec or re.search(r"\d{4,}", spec) for spec in specs):  # a width of >= 1000 chars
            raise ValueError("format widths over 999 and nested fields are not allowed")
        return template.format(**mappings)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as e:
        raise RLDSError(f"cannot format the shard file template {template!r}: {e}") from e


def shard_filenames(dataset: str, split: str, file_format: str, num_shards: int,
                    template: str = DEFAULT_FILEPATH_TEMPLATE) -> list[str]:
    """All shard file names of a split. Sorted, as TFDS sorts them before pairing them with shardLengths
    (for the zero-padded templates TFDS writes, sorted order is shard-index order)."""
    return sorted(shard_filename(dataset, split, file_format, i, num_shards, template)
                  for i in range(num_shards))


def _int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise RLDSError(f"dataset_info.json: {what} is not an integer: {value!r}") from None


def parse_dataset_info(obj: Mapping[str, Any]) -> DatasetInfo:
    """The JSON object of `dataset_info.json` -> DatasetInfo. A malformed object is an RLDSError."""
    if not isinstance(obj, Mapping):
        raise RLDSError(f"dataset_info.json: expected a JSON object, got {type(obj).__name__}")
    file_format = obj.get("fileFormat") or "tfrecord"
    if file_format not in FILE_FORMATS:
        raise RLDSError(f"dataset {obj.get('name')!r} is stored as {file_format!r}; "
                        f"this reader supports {', '.join(FILE_FORMATS)}")
    splits: dict[str, SplitInfo] = {}
    split_list = obj.get("splits", [])
    if not isinstance(split_list, list) or not all(isinstance(s, Mapping) for s in split_list):
        raise RLDSError(f"dataset_info.json: 'splits' must be a list of objects, got {split_list!r:.200}")
    for s in split_list:
        name = s.get("name", "")
        template = s.get("filepathTemplate") or DEFAULT_FILEPATH_TEMPLATE
        if not isinstance(name, str) or not isinstance(template, str):
            raise RLDSError(f"dataset_info.json: split name {name!r:.100} and filepathTemplate "
                            f"{template!r:.100} must be strings")
        if "shardLengths" in s:
            if not isinstance(s["shardLengths"], list):
                raise RLDSError(f"dataset_info.json: split {name!r} shardLengths is not a list")
            lengths = tuple(_int(n, f"split {name!r} shardLengths") for n in s["shardLengths"])
            if any(n < 0 for n in lengths):
                raise RLDSError(f"dataset_info.json: split {name!r} has negative shardLengths {lengths}")
        else:  # datasets written before shardLengths existed: one shard per numShards, sizes unknown
            raise RLDSError(f"dataset_info.json: split {name!r} has no shardLengths (a TFDS < 4 dataset?); "
                            "regenerate it with a recent TFDS")
        splits[name] = SplitInfo(name=name, shard_lengths=lengths,
                                 num_bytes=_int(s.get("numBytes", 0), f"split {name!r} numBytes"),
                                 filepath_template=template)
    return DatasetInfo(name=obj.get("name", ""), version=str(obj.get("version", "")), file_format=file_format,
                       splits=splits, config_name=obj.get("configName", ""),
                       description=obj.get("description", ""), raw=dict(obj))


def read_dataset_info(fs: fsspec.AbstractFileSystem, version_dir: str) -> DatasetInfo:
    """Read and parse `<version_dir>/dataset_info.json` (version_dir is a path inside `fs`)."""
    path = f"{version_dir.rstrip('/')}/dataset_info.json"
    try:
        text = read_file(fs, path)  # retried on transient storage errors
    except FileNotFoundError:
        raise DatasetNotFoundError(f"no dataset_info.json in {version_dir}") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:  # not JSON (JSONDecodeError), not UTF-8, absurdly nested
        raise RLDSError(f"{path} is not valid JSON: {e}") from None
    return parse_dataset_info(obj)
