"""Episode and frame index: where every episode of a split lives, and frame id -> (episode, step).

One sequential scan per shard records, for every episode record, its shard, byte offset, data length and
step count, and (TFRecord) where each key's values and each step's image/text item sit in the record, so a
step can be read without its episode (step_layout.py, step_reader.py). The result is cached as an `.npz`
keyed by a fingerprint of the shard files (names and sizes): first beside the data (`<version
folder>/.rlds_loader/`), or, when that is not writable, in a local cache folder. A changed shard changes
the fingerprint, so a stale index is never used. A local cache's layout arrays are memory-mapped.
Corrupt records stop the build, or with on_corrupt="skip" are excluded and listed (corrupt.py).

The frame table of a (possibly sliced) split numbers every step of every selected episode; frame ids are
the sample space the sampling layer permutes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlds_loader import cache, corrupt, npz_mmap
from rlds_loader.config import short_hash
from rlds_loader.errors import CorruptRecordError
from rlds_loader.step_layout import ARRAYS as LAYOUT_ARRAYS
from rlds_loader.step_layout import LayoutSpec, RecordLayout, StepLayouts, scan_record
from rlds_loader.tfds import storage
from rlds_loader.tfds.example_proto import parse_example

log = logging.getLogger(__name__)

INDEX_FORMAT = 2  # 2: step layouts (step_layout.py)
_FIELDS = ("shard", "offset", "length", "num_steps")


@dataclass(frozen=True)
class EpisodeTable:
    """Every episode record of one whole split, in TFDS order (shard order, then record order)."""

    split: str
    shard: np.ndarray  # int32 [E]
    offset: np.ndarray  # int64 [E]: record offset (tfrecord: header byte offset; array_record: index)
    length: np.ndarray  # int64 [E]: data bytes (-1 when unknown)
    num_steps: np.ndarray  # int64 [E]
    fingerprint: str
    layouts: StepLayouts | None = None  # where each key's values sit in each record (None: ArrayRecord)
    corrupt: tuple[corrupt.BadRecord, ...] = ()  # records excluded by on_corrupt="skip" (0 steps each)

    def __len__(self) -> int:
        return len(self.shard)


def shard_fingerprint(ds, split: str) -> str:
    """Hash of the split's shard names and sizes (and the index format): changes when the data changes."""
    entries = []
    for path in ds.shard_paths(split):
        entries.append([os.path.basename(path.rstrip("/")), int(ds.fs.size(path))])
    return short_hash({"format": INDEX_FORMAT, "split": split, "shards": entries}, 16)


def _scan_shard(ds, split: str, shard: int, spec: LayoutSpec | None = None, on_corrupt: str = "raise",
                verify_images: bool = False) -> tuple[np.ndarray, list[RecordLayout] | None, list]:
    """Rows (shard, offset, length, num_steps) of a shard's records; with `spec` (TFRecord shards) also each
    record's layout row, found without parsing the record. A record the layout cannot describe (malformed, or
    values split over several messages) is parsed instead and gets no layout. With on_corrupt="skip" a bad
    record (see corrupt.py) gets a row with 0 steps and is listed in the third result as (record index in the
    shard, BadRecord with example -1); records beyond dataset_info.json's count are listed with index -1."""
    rows = []
    layouts: list[RecordLayout] | None = [] if spec is not None else None
    bad: list[tuple[int, corrupt.BadRecord]] = []
    extra: list[corrupt.BadRecord] = []
    path = ds.shard_paths(split)[shard]
    records = (ds.scan_shard(split, shard) if on_corrupt == "raise"
               else corrupt.tolerant_records(ds, split, shard, extra))
    for ref, data in records:
        try:
            if isinstance(data, CorruptRecordError):
                raise data
            steps = None
            if spec is not None:
                try:
                    steps, row = scan_record(ds.features, spec, data)
                except Exception:  # parse it: the real error, or valid protobuf the layout cannot describe
                    steps = None
            if steps is None:
                steps = ds.features.num_steps(parse_example(data, path=path, offset=ref.offset))
                row = RecordLayout.unknown(spec, steps) if spec is not None else None
            if verify_images:
                corrupt.check_images(ds.features, data, path, ref.offset)
        except CorruptRecordError as e:
            if on_corrupt == "raise":
                raise
            bad.append((len(rows), corrupt.BadRecord(-1, path, ref.offset, str(e))))
            steps, row = 0, RecordLayout.unknown(spec, 0) if spec is not None else None
        if layouts is not None:
            layouts.append(row)
        rows.append((ref.shard, ref.offset, ref.length, steps))
    bad += [(-1, b) for b in extra]
    return np.array(rows, dtype=np.int64).reshape(-1, 4), layouts, bad


def _table_fingerprint(fingerprint: str, bad: Sequence[corrupt.BadRecord]) -> str:
    """The data files' fingerprint, changed by the set of excluded records (they change the sample space)."""
    return fingerprint if not bad else short_hash([fingerprint, [[b.example, b.offset] for b in bad]], 16)


def _load_cache(fs, path: str, split: str, fingerprint: str) -> EpisodeTable | None:
    """The cached table if its fingerprint matches; a local cache's layout arrays are memory-mapped."""
    if not fs.exists(path):
        return None
    z = npz_mmap.load(fs, path, mmap=tuple(LAYOUT_ARRAYS))
    meta = json.loads(bytes(z["meta"]).decode())
    if meta.get("fingerprint") != fingerprint:
        return None
    local = storage.protocol_prefix(fs) == ""
    layouts = StepLayouts.from_cache(meta, z, z["num_steps"], source=path if local else None)
    bad = tuple(corrupt.BadRecord(*b) for b in meta.get("corrupt", ()))
    return EpisodeTable(split, *(z[f] for f in _FIELDS), fingerprint=_table_fingerprint(fingerprint, bad),
                        layouts=layouts, corrupt=bad)


def build_episode_table(ds, split: str, *, cache_dir: str | None = None, num_threads: int | None = None,
                        on_corrupt: str = "raise", verify_images: bool = False) -> EpisodeTable:
    """The split's episode table: loaded from a cache whose fingerprint matches, else scanned and cached.

    `on_corrupt` ("raise" or "skip") and `verify_images` (decode every image while scanning): see corrupt.py.
    Excluded records are in `table.corrupt` and in a CorruptDataWarning, also when the table is cached.
    """
    corrupt.check_policy(on_corrupt)
    fingerprint = shard_fingerprint(ds, split)
    mode = ("-skip" if on_corrupt == "skip" else "") + ("-images" if verify_images else "")
    locations = cache.locations(ds, f"index-{split}-{fingerprint}{mode}.npz", cache_dir)
    for fs, path in locations:
        try:
            cached = _load_cache(fs, path, split, fingerprint)
            if cached is not None:
                corrupt.warn_excluded(ds.name, split, cached.corrupt)
                return cached
        except Exception as e:  # an unreadable cache is rebuilt, never trusted
            log.warning("ignoring unreadable index cache %s: %s", path, e)

    n_shards = len(ds.shard_paths(split))
    workers = max(1, min(num_threads or os.cpu_count() or 1, n_shards, 16))
    spec = LayoutSpec.from_features(ds.features) if ds.file_format != "array_record" else None
    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(lambda s: _scan_shard(ds, split, s, spec, on_corrupt, verify_images),
                              range(n_shards)))
    rows = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 4), np.int64)
    layouts = StepLayouts.from_rows(spec, [r for p in parts for r in p[1]]) if spec is not None else None
    first = 0
    bad: list[corrupt.BadRecord] = []
    for p in parts:  # record index in its shard -> example index in the split
        bad += [b._replace(example=first + k) if k >= 0 else b for k, b in p[2]]
        first += len(p[0])
    table = EpisodeTable(split, rows[:, 0].astype(np.int32), rows[:, 1].copy(), rows[:, 2].copy(),
                         rows[:, 3].copy(), fingerprint=_table_fingerprint(fingerprint, bad), layouts=layouts,
                         corrupt=tuple(bad))
    corrupt.warn_excluded(ds.name, split, bad)
    expected = sum(ds.shard_lengths(split))
    if len(table) != expected:
        log.warning("%s/%s: dataset_info.json lists %d episodes, the shards hold %d",
                    ds.name, split, expected, len(table))

    buf = io.BytesIO()
    meta = json.dumps({"fingerprint": fingerprint, "dataset": ds.name, "split": split,
                       **({"corrupt": [list(b) for b in bad]} if bad else {}),
                       **(layouts.meta() if layouts is not None else {})}).encode()
    np.savez(buf, meta=np.frombuffer(meta, np.uint8), **{f: getattr(table, f) for f in _FIELDS},
             **(layouts.arrays() if layouts is not None else {}))
    for fs, path in locations:
        try:
            storage.atomic_write(fs, path, buf.getvalue())
        except Exception as e:  # read-only data folder: fall back to the local cache
            log.info("cannot write index cache %s (%s); trying the next location", path, e)
            continue
        if layouts is not None and storage.protocol_prefix(fs) == "":
            try:  # use the memory-mapped copy: bounded RSS, and cheap to pickle for process workers
                return _load_cache(fs, path, split, fingerprint) or table
            except Exception as e:
                log.warning("cannot map the index cache just written to %s: %s", path, e)
        break
    return table


@dataclass(frozen=True)
class FrameIndex:
    """The sample space of one dataset: kept step segments of the episodes of a sliced split spec.

    Episodes are numbered 0..E-1 in split-spec order (per-episode arrays `split_id`, `shard`, `offset`,
    `length`, `num_steps`). Frames are the steps of the kept segments (`seg_episode`, `seg_start`,
    `seg_length`), numbered 0..num_frames-1 in segment order; with no filter there is one whole-episode segment
    per episode. `locate(frame)` maps frame ids to (episode, step) by binary search over the segments' first
    frame ids (vectorised; log2(segments) comparisons, about 20 for a million).
    """

    splits: tuple[str, ...]
    split_id: np.ndarray  # int16 [E]: index into `splits`
    shard: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    num_steps: np.ndarray
    seg_episode: np.ndarray  # int64 [S]
    seg_start: np.ndarray  # int64 [S]
    first_frame: np.ndarray  # int64 [S+1]: cumulative segment lengths, first_frame[S] == num_frames

    @property
    def num_episodes(self) -> int:
        return len(self.shard)

    @property
    def num_frames(self) -> int:
        return int(self.first_frame[-1])

    @property
    def seg_length(self) -> np.ndarray:
        return np.diff(self.first_frame)

    def location(self, ds: Any, episode: int) -> tuple[str, int]:
        """(shard file, record byte offset) of an episode of dataset `ds` (an RLDSDataset): for errors."""
        split = self.splits[int(self.split_id[episode])]
        return ds.shard_paths(split)[int(self.shard[episode])], int(self.offset[episode])

    def locate(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frame = np.asarray(frame, dtype=np.int64)
        seg = np.searchsorted(self.first_frame, frame, side="right") - 1
        return self.seg_episode[seg], self.seg_start[seg] + (frame - self.first_frame[seg])

    def with_segments(self, episode: np.ndarray, start: np.ndarray, length: np.ndarray) -> FrameIndex:
        """The same episodes with another set of kept segments (empty segments are dropped)."""
        episode, start, length = (np.asarray(a, dtype=np.int64) for a in (episode, start, length))
        keep = length > 0
        first = np.concatenate([[0], np.cumsum(length[keep], dtype=np.int64)])
        return dataclasses.replace(self, seg_episode=episode[keep], seg_start=start[keep], first_frame=first)

    @staticmethod
    def from_tables(tables: dict[str, EpisodeTable], ranges: Sequence[tuple[str, int, int]]) -> FrameIndex:
        """Select episode ranges (split, start, stop) of whole-split tables, in the order given."""
        splits = tuple(dict.fromkeys(s for s, _, _ in ranges))
        cols: dict[str, list[np.ndarray]] = {f: [] for f in (*_FIELDS, "split_id")}
        for split, start, stop in ranges:
            t = tables[split]
            for f in _FIELDS:
                cols[f].append(getattr(t, f)[start:stop])
            cols["split_id"].append(np.full(stop - start, splits.index(split), np.int16))
        arrays = {f: (np.concatenate(v) if v else np.zeros(0, np.int64)) for f, v in cols.items()}
        steps = arrays["num_steps"].astype(np.int64)
        first = np.concatenate([[0], np.cumsum(steps, dtype=np.int64)])
        return FrameIndex(splits, arrays["split_id"].astype(np.int16), arrays["shard"].astype(np.int32),
                          arrays["offset"].astype(np.int64), arrays["length"].astype(np.int64), steps,
                          np.arange(len(steps), dtype=np.int64), np.zeros(len(steps), np.int64), first)
