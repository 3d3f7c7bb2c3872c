"""The corrupt-data policy of the index scan: `on_corrupt="raise"` (the default) or `"skip"`.

"raise": the first bad record ends the index build with a CorruptRecordError naming the shard file and
the byte offset. "skip": the scan goes on; each bad episode record keeps its row in the episode table (so
split slices keep TFDS's example numbering) with 0 steps, so it has no frames and is never sampled. Which
records are bad is a function of the shard files alone, so the exclusion is deterministic and the stream
stays a pure function of (config, position); the excluded records are listed in the index (and its cache)
and in a `CorruptDataWarning` each time the index is built or loaded.

A record is bad when
  - its TFRecord framing fails: data CRC mismatch (the walk goes on at the next record, whose place the
    verified length gives), or a length CRC mismatch / a file that ends inside a record (the framing is
    lost: that record and every later one of the shard are bad); an ArrayRecord record that cannot be read;
  - its tf.train.Example does not parse, or its step count is inconsistent (`parse_example`, `num_steps`);
  - `verify_images=True` and an image of one of its steps does not decode (full decode of every frame).
A shard holding more records than dataset_info.json lists: the extra ones are listed too (they belong to
no example index). Storage errors (missing file, retries exhausted) are never "bad data": they raise.

Nothing is dropped at read time. A record that goes bad after the index was built raises when what is read
no longer parses or decodes (a truncated shard, a broken image, a whole-record read, which checks the CRC);
the partial reads of the training path check no CRC, and the index cache is keyed by the shards' names and
sizes, so bytes flipped in place inside a numeric field or a still-decodable image are read as they are.
Rebuild the index (delete its cache) after repairing or replacing shard contents.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import NamedTuple

from rlds_loader.errors import ConfigError, CorruptRecordError
from rlds_loader.tfds import array_record_io, tfrecord
from rlds_loader.tfds.example_proto import parse_example
from rlds_loader.tfds.reader import RecordRef

ON_CORRUPT = ("raise", "skip")

__all__ = ["ON_CORRUPT", "BadRecord", "CorruptDataWarning", "check_images", "check_policy",
           "tolerant_records", "warn_excluded"]


class CorruptDataWarning(UserWarning):
    """Episodes were excluded from the sample space because their records are corrupt (on_corrupt="skip")."""


class BadRecord(NamedTuple):
    """One excluded record: its example index in the split (-1: a record beyond dataset_info.json's count),
    shard file, byte offset of its header (TFRecord; -1 when the framing was lost before it) or record index
    (ArrayRecord), and why."""

    example: int
    path: str
    offset: int
    reason: str


def check_policy(on_corrupt: str) -> str:
    if on_corrupt not in ON_CORRUPT:
        raise ConfigError(f"on_corrupt must be one of {ON_CORRUPT}, got {on_corrupt!r}")
    return on_corrupt


def tolerant_records(ds, split: str, shard: int,
                     extra: list[BadRecord]) -> Iterator[tuple[RecordRef, bytes | CorruptRecordError]]:
    """Exactly dataset_info.json's number of records of one shard, in order, each as (ref, data) or (ref,
    the CorruptRecordError that makes it bad). Records past a point where the framing was lost come as
    (RecordRef(shard, -1, -1), error). Records beyond the expected count are appended to `extra`."""
    path = ds.shard_paths(split)[shard]
    expected = ds.shard_lengths(split)[shard]
    count = 0
    lost: CorruptRecordError | None = None
    if ds.file_format == "array_record":
        records = _array_records(ds, path, shard, expected, extra)
    else:
        records = ((RecordRef(shard, off, n), data) for off, n, data in tfrecord.scan_tolerant(ds.fs, path))
    for ref, data in records:
        if count == expected:
            extra.append(BadRecord(-1, path, ref.offset, "a record beyond the "
                                   f"{expected} that dataset_info.json lists for this shard"))
            continue
        count += 1
        yield ref, data
        if ref.length == -1 and isinstance(data, CorruptRecordError) and ds.file_format != "array_record":
            lost = data
    for _ in range(count, expected):
        if lost is not None:
            why = f"unreachable: the framing of the shard was lost at byte offset {lost.offset}"
        else:
            why = f"missing: the shard holds {count} records, dataset_info.json says {expected}"
        yield RecordRef(shard, -1, -1), CorruptRecordError(f"{path}: {why}", path, None)


def _array_records(ds, path: str, shard: int, expected: int,
                   extra: list[BadRecord]) -> Iterator[tuple[RecordRef, bytes | CorruptRecordError]]:
    try:
        reader = array_record_io.ArrayRecordShard(array_record_io.local_path(ds.fs, path))
    except CorruptRecordError as e:
        for i in range(expected):
            yield RecordRef(shard, i, -1), e
        return
    for i in range(min(expected, reader.num_records)):
        try:
            yield RecordRef(shard, i, -1), reader.read(i)
        except CorruptRecordError as e:
            yield RecordRef(shard, i, -1), e
    for i in range(expected, reader.num_records):
        extra.append(BadRecord(-1, path, i, f"a record beyond the {expected} that dataset_info.json lists"))


def check_images(features, data: bytes, path: str, offset: int) -> None:
    """Decode every image of every step of a record; a CorruptRecordError naming the key and the step if one
    does not decode."""
    from rlds_loader.tfds.features import decode_image

    # float32 images are stored as PNGs of their bytes: decoding them as uint8 is the check
    images = [(p, dtype if dtype in ("uint8", "uint16") else "uint8")
              for p, kind, _, dtype in features.describe() if kind == "Image"]
    if not images:
        return
    flat = parse_example(data, path=path, offset=offset)
    for key, dtype in images:
        for step, raw in enumerate(flat.get(key, [])):
            if not raw:  # an absent image (TFDS writes b"" for a missing optional image)
                continue
            try:
                decode_image(raw, dtype)
            except Exception as e:
                raise CorruptRecordError(f"{path}: record at byte offset {offset}: image {key!r} of step "
                                         f"{step} does not decode: {type(e).__name__}: {e}", path,
                                         offset) from e


def warn_excluded(name: str, split: str, bad: list[BadRecord] | tuple[BadRecord, ...],
                  limit: int = 10) -> None:
    """One CorruptDataWarning listing the excluded records (the first `limit` of them)."""
    if not bad:
        return
    shown = "; ".join(f"example {b.example} ({b.path} at {b.offset}): {b.reason}" for b in bad[:limit])
    more = f"; and {len(bad) - limit} more" if len(bad) > limit else ""
    warnings.warn(CorruptDataWarning(
        f"dataset {name!r} split {split!r}: {len(bad)} corrupt record(s) excluded from the sample space "
        f"(on_corrupt='skip'): {shown}{more}"), stacklevel=3)
