"""Episode and frame index: where every episode of a split lives, and frame id -> (episode, step).

One sequential scan per shard records, for every episode record, its shard, byte offset, data length and
step count. The result is cached as a small `.npz` keyed by a fingerprint of the shard files (names and
sizes): first beside the data (`<version folder>/.rlds_loader/`), or, when that is not writable, in a
local cache folder. A changed shard changes the fingerprint, so a stale index is never used.

The frame table of a (possibly sliced) split numbers every step of every selected episode; frame ids are
the sample space the sampling layer permutes.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from rlds_loader.config import short_hash
from rlds_loader.tfds import storage
from rlds_loader.tfds.example_proto import parse_example

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
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

    def __len__(self) -> int:
        return len(self.shard)


def default_cache_dir() -> str:
    base = os.environ.get("RLDS_LOADER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rlds_loader")
    return base


def shard_fingerprint(ds, split: str) -> str:
    """Hash of the split's shard names and sizes (and the index format): changes when the data changes."""
    entries = []
    for path in ds.shard_paths(split):
        entries.append([os.path.basename(path.rstrip("/")), int(ds.fs.size(path))])
    return short_hash({"format": INDEX_FORMAT, "split": split, "shards": entries}, 16)


def _cache_locations(ds, split: str, fingerprint: str, cache_dir: str | None) -> list[tuple[object, str]]:
    name = f"index-{split}-{fingerprint}.npz"
    beside = (ds.fs, storage.join(ds.path, ".rlds_loader", name))
    local_root = cache_dir or default_cache_dir()
    local_fs, _ = storage.filesystem(local_root)
    local = (local_fs, os.path.join(local_root, "index", short_hash(ds.path, 16), name))
    return [beside, local]


def _scan_shard(ds, split: str, shard: int) -> np.ndarray:
    rows = []
    for ref, data in ds.scan_shard(split, shard):
        steps = ds.features.num_steps(parse_example(data, path=ds.shard_paths(split)[shard], offset=ref.offset))
        rows.append((ref.shard, ref.offset, ref.length, steps))
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def build_episode_table(ds, split: str, *, cache_dir: str | None = None,
                        num_threads: int | None = None) -> EpisodeTable:
    """The split's episode table: loaded from a cache whose fingerprint matches, else scanned and cached."""
    fingerprint = shard_fingerprint(ds, split)
    locations = _cache_locations(ds, split, fingerprint, cache_dir)
    for fs, path in locations:
        try:
            if fs.exists(path):
                with np.load(io.BytesIO(fs.cat_file(path))) as z:
                    meta = json.loads(bytes(z["meta"]).decode())
                    if meta.get("fingerprint") == fingerprint:
                        return EpisodeTable(split, *(z[f] for f in _FIELDS), fingerprint=fingerprint)
        except Exception as e:  # an unreadable cache is rebuilt, never trusted
            log.warning("ignoring unreadable index cache %s: %s", path, e)

    n_shards = len(ds.shard_paths(split))
    workers = max(1, min(num_threads or os.cpu_count() or 1, n_shards, 16))
    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(lambda s: _scan_shard(ds, split, s), range(n_shards)))
    rows = np.concatenate(parts) if parts else np.zeros((0, 4), np.int64)
    table = EpisodeTable(split, rows[:, 0].astype(np.int32), rows[:, 1].copy(), rows[:, 2].copy(),
                         rows[:, 3].copy(), fingerprint=fingerprint)
    expected = sum(ds.shard_lengths(split))
    if len(table) != expected:
        log.warning("%s/%s: dataset_info.json lists %d episodes, the shards hold %d",
                    ds.name, split, expected, len(table))

    buf = io.BytesIO()
    meta = json.dumps({"fingerprint": fingerprint, "dataset": ds.name, "split": split}).encode()
    np.savez(buf, meta=np.frombuffer(meta, np.uint8), **{f: getattr(table, f) for f in _FIELDS})
    for fs, path in locations:
        try:
            storage.atomic_write(fs, path, buf.getvalue())
            break
        except Exception as e:  # read-only data folder: fall back to the local cache
            log.info("cannot write index cache %s (%s); trying the next location", path, e)
    return table


@dataclass(frozen=True)
class FrameIndex:
    """The episodes of a sliced split spec and their frames, numbered 0..num_frames-1 in episode order.

    `locate(frame)` maps frame ids to (episode, step) by binary search over the episodes' first frame ids
    (vectorised; log2(E) comparisons, about 20 for a million episodes).
    """

    splits: tuple[str, ...]
    split_id: np.ndarray  # int16 [E]: index into `splits`
    shard: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    num_steps: np.ndarray
    first_frame: np.ndarray  # int64 [E+1]: cumulative step counts, first_frame[E] == num_frames

    @property
    def num_episodes(self) -> int:
        return len(self.shard)

    @property
    def num_frames(self) -> int:
        return int(self.first_frame[-1])

    def locate(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frame = np.asarray(frame, dtype=np.int64)
        episode = np.searchsorted(self.first_frame, frame, side="right") - 1
        return episode, frame - self.first_frame[episode]

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
        first = np.concatenate([[0], np.cumsum(arrays["num_steps"], dtype=np.int64)])
        return FrameIndex(splits, arrays["split_id"], arrays["shard"].astype(np.int32),
                          arrays["offset"].astype(np.int64), arrays["length"].astype(np.int64),
                          arrays["num_steps"].astype(np.int64), first)
