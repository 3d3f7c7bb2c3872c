"""Read the steps a sample needs, not its episode: byte ranges located by the index's step layouts.

    reader = StepReader(ds, frames, tables)     # tables: {split: EpisodeTable} with layouts (index.py)
    cam, state, chunk, text = reader.read([
        StepRequest(e, "steps/observation/image", t, t + 1),    # -> [b"<jpeg>"]
        StepRequest(e, "steps/observation/state", t, t + 1),    # -> float64 [1, 7]
        StepRequest(e, "steps/action", t, min(t + 10, T)),      # -> float64 [n, 7]
        StepRequest(e, "steps/language_instruction", t, t + 1), # -> ["pick up the cup"]
    ])

A request asks for steps [start, stop) of one leaf feature (its path, e.g. "steps/observation/image") of
episode `episode` (numbered as in the FrameIndex; the caller clips the range to the episode). Results are
what `ds.features.decode_example` gives for the whole episode, sliced to those steps: per-step images and
other bytes -> list[bytes]; text -> list[str]; numbers -> np.ndarray [stop - start, *step shape] in the
spec's dtype (float64 goes through the stored float32, bool comes from int64, bytes/zlib-encoded tensors are
decoded). An episode-level key (`episode_metadata/...`) returns its decoded value; start/stop are ignored.

How: the index's step layouts (step_layout.py) say where each key's values sit in each record, and for
per-step bytes keys where each step's item sits. A request becomes one byte range: the items of its steps
(consecutive items are contiguous), the float32 values of its steps of a packed float list, or the whole
(small) region of an int64 list. All ranges of one `read` call are fetched together: local files with
`os.pread` on a file descriptor cached per shard (opened lazily, reopened in a new process after fork or
unpickling), remote files with one `storage.read_ranges` call (fsspec's `cat_ranges`, requests run
concurrently, transient failures retried: tfds/retry.py). Ranges close
together in one file are merged into one read. `fetch_many` and `read_columns` (a training batch's fixed
keys, one request per row) plan the common requests per key with array operations instead of per request.

Fallback to the whole record (read, CRC-checked, parsed, decoded, sliced; the last few parsed records are
kept) for ArrayRecord shards (chunks are compressed), ragged features (a sequence inside the steps) and
records the index holds no layout for. Partial
reads skip the record CRC (the index scan checked it); a decode failure names the shard file and the record
offset, and `location(episode)` gives both for errors raised later (e.g. a corrupt JPEG).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

import numpy as np

from rlds_loader import local_reads
from rlds_loader.errors import CorruptRecordError, FeatureKeyError
from rlds_loader.index import EpisodeTable, FrameIndex
from rlds_loader.step_layout import KIND_CODES, MISSING, STEPS, UNKNOWN, StepLayouts
from rlds_loader.tfds import storage, tfrecord
from rlds_loader.tfds.example_layout import FieldLayout, decode_floats, field_values
from rlds_loader.tfds.example_proto import parse_example
from rlds_loader.tfds.features import EncodedImages, Image, Tensor, Text
from rlds_loader.tfds.features.base import STRING, Leaf, wire_kind
from rlds_loader.tfds.reader import RecordRef
from rlds_loader.tfds.storage import protocol_prefix

__all__ = ["StepReader", "StepRequest"]

_BYTES, _FLOAT, _INT64, _NONE = (KIND_CODES[k] for k in ("bytes", "float", "int64", "none"))
_WIRE_CODES = {"bytes": _BYTES, "float": _FLOAT, "int64": _INT64}


class StepRequest(NamedTuple):
    """Steps [start, stop) of leaf feature `key` of episode `episode` (FrameIndex numbering)."""

    episode: int
    key: str
    start: int
    stop: int


@dataclass(frozen=True)
class _Part:
    """One flat Example key of a leaf: where it is in the layout tables and how many values a step has."""

    key: str
    column: int | None  # in StepLayouts.keys
    item_column: int | None  # in StepLayouts.item_keys (per-step keys with one bytes item per step)
    per_step: int | None  # values per step (None: unknown)
    wire: int  # expected kind code


@dataclass(frozen=True)
class _Plan:
    """How to read one leaf: its flat keys, and which decoder applies."""

    leaf: Leaf
    per_step: bool
    parts: tuple[_Part, ...]
    fast: str | None  # "image" | "text" | "numeric" | None (the features' own decoder)
    partial: bool  # the layouts cover it


def _plan(leaf: Leaf, layouts: StepLayouts | None) -> _Plan:
    # Per step: any leaf under the steps, a Sequence inside a step too (its steps are sliced like the others').
    per_step = leaf.outer_paths[:1] == (STEPS,)
    one_level = len(leaf.outer) == 1
    columns = {k: i for i, k in enumerate(layouts.keys)} if layouts is not None else {}
    items = {k: i for i, k in enumerate(layouts.item_keys)} if layouts is not None else {}
    parts = []
    for key, (shape, dtype) in leaf.keys().items():
        inner = shape[len(leaf.outer):]
        n = None if None in inner else int(np.prod(inner, dtype=np.int64))
        parts.append(_Part(key, columns.get(key), items.get(key), n, _WIRE_CODES[wire_kind(dtype)]))
    feature = leaf.feature
    fast = None
    if per_step and one_level and len(parts) == 1:
        if isinstance(feature, Image):
            fast = "image"
        elif isinstance(feature, Text):
            fast = "text"
        elif isinstance(feature, Tensor) and feature.encoding == "none" and feature.dtype != STRING:
            fast = "numeric"
    partial = (layouts is not None and len(leaf.outer) <= 1
               and all(p.column is not None and (p.per_step is not None or not (per_step and one_level))
                       for p in parts))
    return _Plan(leaf, per_step, tuple(parts), fast, partial)


_LIVE_FILES: weakref.WeakSet[_Files] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for files in list(_LIVE_FILES):
        files._reset()  # the parent's descriptors (and lock state) are not this process's business


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Files:
    """File descriptors of local shard files, opened on first use, at most `limit` open (least recently
    used closed first, never while a read holds it). Forgotten in a forked child, which opens its own."""

    def __init__(self, limit: int):
        self.limit = limit
        self._reset()
        _LIVE_FILES.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._users: dict[str, int] = {}

    def acquire(self, path: str) -> int:
        return self.acquire_many([path])[0]

    def acquire_many(self, paths: Sequence[str]) -> list[int]:
        """Descriptors of `paths`, each held until released (one lock round for all)."""
        fds = []
        with self._lock:
            try:
                for path in paths:
                    fd = self._fds.get(path)
                    if fd is None:
                        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                        self._fds[path] = fd
                    self._fds.move_to_end(path)
                    self._users[path] = self._users.get(path, 0) + 1
                    fds.append(fd)
            except OSError:
                self._release(paths[:len(fds)])
                raise
            finally:
                self._evict()
        return fds

    def release(self, path: str) -> None:
        self.release_many([path])

    def release_many(self, paths: Sequence[str]) -> None:
        with self._lock:
            self._release(paths)
            self._evict()

    def _release(self, paths: Sequence[str]) -> None:
        for path in paths:
            if path in self._users:
                self._users[path] -= 1
                if not self._users[path]:
                    del self._users[path]

    def _evict(self) -> None:
        for path in list(self._fds):
            if len(self._fds) <= self.limit:
                return
            if path not in self._users:
                os.close(self._fds.pop(path))

    def __del__(self, _close=os.close) -> None:  # os may already be torn down at interpreter exit
        for fd in getattr(self, "_fds", {}).values():
            try:
                _close(fd)
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            for path in [p for p in self._fds if p not in self._users]:
                os.close(self._fds.pop(path))


class StepReader:
    """Steps of episodes of one dataset (one FrameIndex), read by byte range; see the module docstring.

    `ds`: the RLDSDataset; `frames`: the FrameIndex whose episode numbers requests use (its per-episode
    arrays `split_id`, `shard`, `offset`); `tables`: {split: EpisodeTable} of its splits (with layouts).
    Safe to share between threads, picklable (for process workers), usable after fork.
    """

    def __init__(self, ds: Any, frames: FrameIndex, tables: Mapping[str, EpisodeTable], *,
                 merge_gap: int | None = None, max_open_files: int = 128, cache_records: int = 4):
        self.ds = ds
        self.frames = frames
        self.tables = dict(tables)
        self._local = protocol_prefix(ds.fs) == ""
        # Local: a pread costs about as much as copying 16 KB more, so ranges that close are read as one.
        self.merge_gap = merge_gap if merge_gap is not None else ((16 << 10) if self._local else 256 << 10)
        self.max_open_files = max_open_files
        self.cache_records = cache_records
        self._layouts = {s: (self.tables[s].layouts if ds.file_format == "tfrecord" else None)
                         for s in frames.splits}
        self._rows = self._table_rows()
        self._paths = {s: ds.shard_paths(s) for s in frames.splits}
        # every shard of every split numbered once: read_columns plans ranges as (file number, start, end) arrays
        self._all_paths = [path for split in frames.splits for path in self._paths[split]]
        counts = [len(self._paths[x]) for x in frames.splits]
        self._first_file = dict(zip(frames.splits, np.cumsum([0, *counts]).tolist(), strict=False))
        self._leaves = {leaf.path: leaf for leaf in ds.features.all_leaves}
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._files = _Files(self.max_open_files)
        self._plans: dict[tuple[str, str], _Plan] = {}
        self._records: OrderedDict[int, dict[str, Any]] = OrderedDict()  # whole-record path: parsed records
        self._records_lock = threading.Lock()
        self._thread = threading.local()  # each thread's read buffer (read_columns)
        self._everywhere: dict[tuple[str, str], bool] = {}  # _served_everywhere

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_files", "_plans", "_records", "_records_lock", "_thread", "_everywhere"):
            state.pop(name, None)
        # the dataset holds a lock and file caches: send its file system and folder, reopen it on arrival
        ds = state.pop("ds")
        state["_ds_location"] = (ds.fs, ds.path[len(protocol_prefix(ds.fs)):])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from rlds_loader.tfds.reader import RLDSDataset

        fs, folder = state.pop("_ds_location")
        self.__dict__.update(state)
        self.ds = RLDSDataset(fs, folder)
        self._init_runtime()

    def close(self) -> None:
        """Close the cached file descriptors (they are reopened if the reader is used again)."""
        self._files.close()

    def _table_rows(self) -> np.ndarray:
        """The EpisodeTable row of each FrameIndex episode, matched by (shard, offset)."""
        f = self.frames
        rows = np.zeros(len(f.shard), np.int64)
        for i, split in enumerate(f.splits):
            table = self.tables[split]
            sel = np.flatnonzero(np.asarray(f.split_id) == i)
            tkeys = (np.asarray(table.shard, np.int64) << 40) | np.asarray(table.offset, np.int64)
            order = np.argsort(tkeys, kind="stable")
            fkeys = (np.asarray(f.shard, np.int64)[sel] << 40) | np.asarray(f.offset, np.int64)[sel]
            pos = np.minimum(np.searchsorted(tkeys[order], fkeys), max(len(tkeys) - 1, 0))
            found = order[pos] if len(tkeys) else pos
            if len(sel) and (not len(tkeys) or np.any(tkeys[found] != fkeys)):
                raise ValueError(f"split {split!r}: FrameIndex episodes missing from its EpisodeTable")
            rows[sel] = found
        return rows

    # --- public ----------------------------------------------------------------------------------------

    def location(self, episode: int) -> tuple[str, int]:
        """(shard file, record offset) of an episode: for error messages."""
        return self.frames.location(self.ds, episode)

    def read(self, requests: Sequence[StepRequest]) -> list[Any]:
        """The values of every request, in order (see the module docstring). All byte ranges are fetched
        together; requests the layouts do not cover read their whole record (once per episode)."""
        ranges: list[tuple[str, int, int]] = []
        jobs: list[tuple[StepRequest, _Plan, list | None]] = []
        full: dict[int, list[int]] = {}
        for i, req in enumerate(requests):
            if type(req) is not StepRequest:
                req = StepRequest(*req)
            plan, split = self._request_plan(req)
            pieces = self._pieces(req, plan, split, ranges) if plan.partial else None
            if pieces is None:
                full.setdefault(int(req.episode), []).append(i)
            jobs.append((req, plan, pieces))
        blobs = self._fetch(ranges) if ranges else []
        out: list[Any] = [None] * len(jobs)
        for i, (req, plan, pieces) in enumerate(jobs):
            if pieces is not None:
                try:
                    out[i] = self._decode(req, plan, pieces, blobs)
                except Exception as e:
                    self._reraise(req, e)
        for episode, idx in full.items():
            self._read_full(episode, [(i, jobs[i][0], jobs[i][1]) for i in idx], out)
        return out

    def with_frames(self, frames: FrameIndex) -> StepReader:
        """The same reader over another FrameIndex of the same splits (e.g. after filtering)."""
        return StepReader(self.ds, frames, self.tables, merge_gap=self.merge_gap,
                          max_open_files=self.max_open_files, cache_records=self.cache_records)

    def fetch(self, episode: int, requests: Sequence[tuple[str, int, int]]) -> list[Any]:
        """(key, start, stop) requests on one episode: `read` with StepRequests (EpisodeSource.fetch's form)."""
        return self.read([StepRequest(episode, key, start, stop) for key, start, stop in requests])

    def fetch_many(self, items: Sequence[tuple[int, Sequence[tuple[str, int, int]]]]) -> list[list[Any]]:
        """Several episodes' (key, start, stop) requests, all byte ranges in flight at once: the values of
        each episode's requests, in order. The same results as `read`.

        The common requests of a training batch (one step of a camera or instruction, packed float steps of
        a numeric key) are planned per key for all episodes at once with array operations; the rest go
        through `read`. Per-request planning in Python held the GIL that the image decoding threads need.
        """
        out: list[list[Any]] = [[None] * len(reqs) for _, reqs in items]
        groups: dict[tuple[str, int], list[tuple[int, int, int, int, int]]] = {}  # (key, split id) -> requests
        rest: list[tuple[int, int, StepRequest]] = []
        split_id, episodes = self.frames.split_id, len(self.frames.shard)
        for i, (e, reqs) in enumerate(items):
            e = int(e)
            for j, (key, a, b) in enumerate(reqs):
                if 0 <= e < episodes:
                    groups.setdefault((key, int(split_id[e])), []).append((i, j, e, int(a), int(b)))
                else:  # read() raises the error
                    rest.append((i, j, StepRequest(e, key, a, b)))
        ranges: list[tuple[str, int, int]] = []
        served: list[tuple[str, _Plan, np.ndarray, int]] = []
        for (key, split), group in groups.items():
            table = np.array(group, np.int64).reshape(-1, 5)
            got = self._group_ranges(key, self.frames.splits[split], table[:, 2], table[:, 3], table[:, 4])
            if got is None:
                rest += [(i, j, StepRequest(e, key, a, b)) for i, j, e, a, b in group]
            else:
                plan, files, lo, hi = got
                served.append((key, plan, table, len(ranges)))
                ranges += self._path_ranges(files, lo, hi)
        blobs = self._fetch(ranges) if ranges else []
        for key, plan, table, first in served:
            for r, (i, j, e, a, b) in enumerate(table.tolist()):
                blob = blobs[first + r]
                try:  # the byte range is one item (camera, text) or the packed floats of the steps
                    values = (decode_floats(blob, True) if plan.fast == "numeric"
                              else [blob if isinstance(blob, bytes) else bytes(blob)])
                    out[i][j] = _fast_result(plan, values, b - a)
                except Exception as exc:
                    self._reraise(StepRequest(e, key, a, b), exc)
        if rest:
            for (i, j, _), value in zip(rest, self.read([req for _, _, req in rest]), strict=True):
                out[i][j] = value
        return out

    def read_columns(self, columns: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], *,
                     copy: bool = True) -> list[Any] | None:
        """The batch form of `fetch_many` for a training batch's fixed keys: each column is (key, episodes,
        starts, stops), one request per row; all byte ranges of all columns are fetched together. Per column:
        for a numeric key the values of every row's steps, concatenated in row order, flat, in the feature's
        dtype (row r has (stops[r] - starts[r]) * the values per step); for a camera a list of each row's
        bytes, for per-step text a list of str (one step per row for both). Returns None, having read
        nothing, when any request is not a per-step key the layouts serve by byte range (the caller then
        uses `fetch_many`, which serves everything or raises its errors).

        Local files are read without the GIL into a buffer of the calling thread (`local_reads`); with
        `copy=False` a camera's values are memoryviews of that buffer, valid until this thread's next
        `read_columns` (the batch builder decodes them at once)."""
        f = self.frames
        files, los, his = [], [], []
        served: list[tuple[_Plan, int]] = []
        for key, episodes, starts, stops in columns:
            e = np.asarray(episodes, np.int64)
            a, b = np.asarray(starts, np.int64), np.asarray(stops, np.int64)
            if not len(e) or (e < 0).any() or (e >= len(f.shard)).any():
                return None
            if len(f.splits) == 1:
                got = self._group_ranges(key, f.splits[0], e, a, b)
                if got is None:
                    return None
                plan, file, lo, hi = got
            else:
                split_ids = f.split_id[e]
                file, lo, hi = (np.zeros(len(e), np.int64) for _ in range(3))
                for split in np.unique(split_ids).tolist():
                    sel = np.flatnonzero(split_ids == split)
                    got = self._group_ranges(key, f.splits[split], e[sel], a[sel], b[sel])
                    if got is None:
                        return None
                    plan, file[sel], lo[sel], hi[sel] = got
            served.append((plan, len(e)))
            files.append(file)
            los.append(lo)
            his.append(hi)
        if self._local and local_reads.AVAILABLE:
            return self._columns_from_buffer(served, files, los, his, copy)
        blobs = self._fetch(self._path_ranges(np.concatenate(files), np.concatenate(los), np.concatenate(his)))
        out: list[Any] = []
        first = 0
        for plan, n in served:
            mine = blobs[first:first + n]
            first += n
            out.append(_column_values(plan, mine, b"".join(mine) if plan.fast == "numeric" else b"", copy))
        return out

    def _path_ranges(self, file: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[tuple[str, int, int]]:
        """Ranges as arrays (file number in `_all_paths`, start, end) -> `_fetch`'s (path, start, end)."""
        return list(zip([self._all_paths[x] for x in file.tolist()], lo.tolist(), hi.tolist(), strict=True))

    # A thread's read buffer is kept for its next batch up to this size; larger reads get a buffer of their own.
    KEEP_BUFFER_BYTES = 64 << 20

    def _columns_from_buffer(self, served: list[tuple[_Plan, int]], files: list[np.ndarray], los: list[np.ndarray],
                             his: list[np.ndarray], copy: bool) -> list[Any]:
        """read_columns for local files: every range read into one buffer, each column's ranges one after the
        other (a numeric column is then one contiguous run of float32), columns starting 8-byte aligned."""
        sizes = [hi - lo for lo, hi in zip(los, his, strict=True)]
        starts, dests, at = [], [], 0
        for n in sizes:
            at = -(-at // 8) * 8
            starts.append(at)
            dests.append(at + np.cumsum(n) - n)
            at += int(n.sum())
        buf = self._buffer(at)
        file, lo, n, dest = (np.concatenate(x) for x in (files, los, sizes, dests))
        self._read_into(file, lo, n, dest, buf)
        view = memoryview(buf)
        out: list[Any] = []
        for (plan, _), start, size, d in zip(served, starts, sizes, dests, strict=True):
            if plan.fast == "numeric":
                out.append(_column_values(plan, [], buf[start:start + int(size.sum())], copy))
            else:
                out.append(_column_values(plan, [view[a:a + k] for a, k in zip(d.tolist(), size.tolist(), strict=True)],
                                          b"", copy))
        return out

    def _buffer(self, size: int) -> np.ndarray:
        """A uint8 buffer of `size` bytes for this thread (reused while it fits KEEP_BUFFER_BYTES)."""
        if size > self.KEEP_BUFFER_BYTES:
            return np.empty(size, np.uint8)
        buf = getattr(self._thread, "buffer", None)
        if buf is None or buf.size < size:
            buf = self._thread.buffer = np.empty(max(size, 1 << 20), np.uint8)
        return buf

    def _read_into(self, file: np.ndarray, lo: np.ndarray, n: np.ndarray, dest: np.ndarray, buf: np.ndarray) -> None:
        """Ranges (file number, start, length) of local shards -> buf[dest:dest + length], GIL released; a
        range that cannot be read in full raises what `_fetch` raises for it (CorruptRecordError past the end
        of the file, OSError)."""
        used = np.unique(file)
        paths = [self._all_paths[x] for x in used.tolist()]
        fd_of = np.zeros(len(self._all_paths), np.int64)
        fd_of[used] = self._files.acquire_many(paths)
        try:
            fds = fd_of[file]
            first = 0
            while first < len(lo):
                bad = local_reads.read_into(fds[first:], lo[first:], n[first:], dest[first:], buf)
                if bad < 0:
                    return
                i = first + bad  # re-read that one range in Python: it says what is wrong, or succeeds (EINTR)
                path, start, end = self._all_paths[int(file[i])], int(lo[i]), int(lo[i] + n[i])
                data = self._check_read(os.pread(int(fds[i]), end - start, start), path, start, end)
                buf[int(dest[i]):int(dest[i]) + len(data)] = np.frombuffer(data, np.uint8)
                first = i + 1
        finally:
            self._files.release_many(paths)

    def _group_ranges(self, key: str, split: str, e: np.ndarray, a: np.ndarray,
                      b: np.ndarray) -> tuple[_Plan, np.ndarray, np.ndarray, np.ndarray] | None:
        """The array path of `fetch_many` and `read_columns` for requests of one key on episodes `e` of one
        split, steps [a, b): (the key's plan, each request's file number in `_all_paths`, byte range start,
        end), or None when
        any request needs `read` (other feature kinds, steps out of range, layouts that differ from the
        features)."""
        f = self.frames
        plan = self._key_plan(split, key)
        if plan is None or not (plan.partial and plan.per_step and plan.fast is not None and len(plan.parts) == 1):
            return None
        items = plan.fast in ("image", "text")
        layouts, part = self._layouts[split], plan.parts[0]
        if items and part.item_column is None or not items and (part.wire != _FLOAT or part.per_step is None):
            return None
        # one step of an item per request, steps inside the episode
        if ((b - a != 1) if items else (a > b)).any() or (a < 0).any() or (b > f.num_steps[e]).any():
            return None
        rows = self._rows[e]
        if not self._served_everywhere(split, key, plan) and not _stored_as_read(layouts, part, items, rows):
            return None
        base = f.offset[e].astype(np.int64) + tfrecord.HEADER
        if items:
            item = layouts.item_first[rows] + a
            lo = base + layouts.item_offset[item, part.item_column].astype(np.int64)
            hi = lo + layouts.item_length[item, part.item_column].astype(np.int64)
        else:
            start = base + layouts.start[rows, part.column].astype(np.int64)
            lo, hi = start + 4 * part.per_step * a, start + 4 * part.per_step * b
        return plan, self._first_file[split] + f.shard[e].astype(np.int64), lo, hi

    def _served_everywhere(self, split: str, key: str, plan: _Plan) -> bool:
        """Whether every record of `split` stores `key` the way `_group_ranges` reads it (the kind the
        features say, floats packed): computed once per key, so that a batch need not check its records."""
        cached = self._everywhere.get((split, key))
        if cached is None:
            items = plan.fast in ("image", "text")
            cached = self._everywhere[(split, key)] = _stored_as_read(self._layouts[split], plan.parts[0], items,
                                                                      slice(None))
        return cached

    # --- planning --------------------------------------------------------------------------------------

    def _request_plan(self, req: StepRequest) -> tuple[_Plan, str]:
        f = self.frames
        e = int(req.episode)
        if not 0 <= e < len(f.shard):
            raise IndexError(f"episode {e} out of range: the FrameIndex has {len(f.shard)} episodes")
        split = f.splits[int(f.split_id[e])]
        plan = self._key_plan(split, req.key)
        if plan is None:
            raise FeatureKeyError(f"no feature {req.key!r}; the features are: {', '.join(self._leaves)}")
        if plan.per_step:
            steps = int(f.num_steps[e])
            if not 0 <= req.start <= req.stop <= steps:
                raise IndexError(f"steps [{req.start}, {req.stop}) of episode {e} ({steps} steps) "
                                 f"of {req.key!r}")
        return plan, split

    def _key_plan(self, split: str, key: str) -> _Plan | None:
        """How to read `key` in `split` (made once, then cached); None when there is no such feature."""
        plan = self._plans.get((split, key))
        if plan is None:
            leaf = self._leaves.get(key.strip("/"))
            if leaf is None:
                return None
            plan = self._plans[(split, key)] = _plan(leaf, self._layouts[split])
        return plan

    def _pieces(self, req: StepRequest, plan: _Plan, split: str, ranges: list) -> list | None:
        """Per flat key of the leaf: (part, kind code, how to decode, index into ranges), appending the byte
        ranges to read; None when the layouts cannot serve this request."""
        layouts = self._layouts[split]
        assert layouts is not None
        f = self.frames
        e = int(req.episode)
        row = int(self._rows[e])
        path = self._paths[split][int(f.shard[e])]
        base = int(f.offset[e]) + tfrecord.HEADER
        a, b = int(req.start), int(req.stop)
        pieces = []
        mine: list[tuple[str, int, int]] = []  # added to `ranges` only if the whole leaf can be served
        for part in plan.parts:
            code = int(layouts.kind[row, part.column])
            if code == UNKNOWN:
                return None
            if code in (MISSING, _NONE):
                pieces.append((part, code, None, -1))
                continue
            if plan.per_step and part.item_column is not None and code == _BYTES:
                if b == a + 1:  # one step's item (a camera frame): its exact byte range, no arrays
                    r0 = int(layouts.item_first[row]) + a
                    lo = int(layouts.item_offset[r0, part.item_column])
                    pieces.append((part, code, ("item",), len(ranges) + len(mine)))
                    mine.append((path, base + lo, base + lo + int(layouts.item_length[r0, part.item_column])))
                    continue
                if a == b:
                    pieces.append((part, code, ("items", np.zeros(0, np.int64), np.zeros(0, np.int64)), -1))
                    continue
                r0 = int(layouts.item_first[row]) + a
                offs = np.asarray(layouts.item_offset[r0:r0 + b - a, part.item_column], np.int64)
                lens = np.asarray(layouts.item_length[r0:r0 + b - a, part.item_column], np.int64)
                lo, hi = int(offs[0]), int(offs[-1] + lens[-1])
                pieces.append((part, code, ("items", offs - lo, lens), len(ranges) + len(mine)))
                mine.append((path, base + lo, base + hi))
                continue
            start, packed = int(layouts.start[row, part.column]), bool(layouts.packed[row, part.column])
            if plan.per_step and code == _FLOAT and packed:
                n = 4 * part.per_step
                pieces.append((part, code, ("floats",), len(ranges) + len(mine)))
                mine.append((path, base + start + n * a, base + start + n * b))
            else:
                pieces.append((part, code, ("region", packed), len(ranges) + len(mine)))
                mine.append((path, base + start, base + int(layouts.end[row, part.column])))
        ranges.extend(mine)
        return pieces

    # --- reading ---------------------------------------------------------------------------------------

    def _fetch(self, ranges: list[tuple[str, int, int]]) -> list[bytes | memoryview]:
        """The bytes of every range, in order; ranges of one file closer than merge_gap are read as one."""
        order = sorted(range(len(ranges)), key=lambda i: ranges[i])
        merged: list[list] = []  # [path, start, end, [range indices]]
        for i in order:
            path, s, e = ranges[i]
            if merged and merged[-1][0] == path and s <= merged[-1][2] + self.merge_gap:
                merged[-1][2] = max(merged[-1][2], e)
                merged[-1][3].append(i)
            else:
                merged.append([path, s, e, [i]])
        blobs = self._read_local(merged) if self._local else self._read_remote(merged)
        out: list[bytes | memoryview] = [b""] * len(ranges)
        for (_, s, e, members), blob in zip(merged, blobs, strict=True):
            view = memoryview(blob)
            for i in members:
                _, rs, re = ranges[i]
                out[i] = blob if (rs, re) == (s, e) else view[rs - s:re - s]  # whole: no copy later
        return out

    def _read_local(self, merged: list[list]) -> list[bytes]:
        out: list[bytes] = []
        i = 0
        while i < len(merged):  # `merged` is sorted by path: one descriptor acquisition per file
            path = merged[i][0]
            fd = self._files.acquire(path)
            try:
                while i < len(merged) and merged[i][0] == path:
                    _, s, e, _ = merged[i]
                    out.append(self._check_read(os.pread(fd, e - s, s), path, s, e))
                    i += 1
            finally:
                self._files.release(path)
        return out

    def _read_remote(self, merged: list[list]) -> list[bytes]:
        paths = [m[0] for m in merged]
        got = storage.read_ranges(self.ds.fs, paths, [m[1] for m in merged], [m[2] for m in merged])
        return [self._check_read(data, path, s, e) for (path, s, e, _), data in zip(merged, got, strict=True)]

    @staticmethod
    def _check_read(data: bytes, path: str, s: int, e: int) -> bytes:
        if len(data) != e - s:
            raise CorruptRecordError(f"{path}: bytes [{s}, {e}) are past the end of the file (it changed since "
                                     "it was indexed?)", path, s)
        return data

    # --- decoding --------------------------------------------------------------------------------------

    def _guarded(self, req: StepRequest, fn: Any) -> Any:
        try:
            return fn()
        except Exception as e:
            self._reraise(req, e)

    def _reraise(self, req: StepRequest, e: Exception) -> NoReturn:
        """Re-raise a decoding failure of `req` as a CorruptRecordError naming the shard file and offset."""
        if isinstance(e, IndexError | FeatureKeyError):
            raise e
        path, offset = self.location(int(req.episode))
        raise CorruptRecordError(f"{path}: record at byte offset {offset}: cannot decode {req.key!r} steps "
                                 f"[{req.start}, {req.stop}): {e}", path, offset) from e

    def _decode(self, req: StepRequest, plan: _Plan, pieces: list, blobs: list[bytes | memoryview]) -> Any:
        a, b = int(req.start), int(req.stop)
        flat: dict[str, Any] = {}
        kinds_ok = True
        for part, code, how, index in pieces:
            if code == MISSING:
                kinds_ok = False
                continue
            if code == _NONE:
                flat[part.key] = []
                continue
            kinds_ok &= code == part.wire
            blob = blobs[index] if index >= 0 else b""
            if how[0] == "item":
                flat[part.key] = [blob if isinstance(blob, bytes) else bytes(blob)]
            elif how[0] == "items":
                _, offs, lens = how
                flat[part.key] = [bytes(blob[o:o + n]) for o, n in zip(offs.tolist(), lens.tolist(), strict=True)]
            elif how[0] == "floats":
                flat[part.key] = decode_floats(blob, True)
            else:
                kind = {_BYTES: "bytes", _FLOAT: "float", _INT64: "int64"}[code]
                values = field_values(blob, FieldLayout(kind, 0, len(blob), how[1]))
                if plan.per_step:
                    n = part.per_step
                    values = values[n * a:n * b]
                flat[part.key] = values
        if plan.fast is not None and kinds_ok:
            return _fast_result(plan, flat[plan.parts[0].key], b - a)
        return _convert(self._decode_leaf(plan.leaf, flat), plan.per_step, None)

    def _decode_leaf(self, leaf: Leaf, flat: Mapping[str, Any]) -> Any:
        node = self.ds.features.decode_example(flat, keys=[leaf.path])
        for name in leaf.parts:
            node = node[name]
        return node

    def _read_full(self, episode: int, items: list[tuple[int, StepRequest, _Plan]], out: list[Any]) -> None:
        """Requests served from the whole record: read and parse it once, decode the keys asked for."""
        flat = self._parsed_record(episode)
        tree: dict[str, Any] = {}
        for i, req, plan in items:
            leaf = plan.leaf
            if leaf.path not in tree:
                tree[leaf.path] = self._guarded(req, lambda leaf=leaf: self._decode_leaf(leaf, flat))
            window = (int(req.start), int(req.stop)) if plan.per_step else None
            out[i] = _convert(tree[leaf.path], plan.per_step, window)


    def _parsed_record(self, episode: int) -> dict[str, Any]:
        """Episode's record read (CRC-checked) and parsed; the last `cache_records` are kept, which makes
        unshuffled reading of ArrayRecord datasets one read per episode."""
        with self._records_lock:
            flat = self._records.get(episode)
            if flat is not None:
                self._records.move_to_end(episode)
                return flat
        f = self.frames
        split = f.splits[int(f.split_id[episode])]
        ref = RecordRef(int(f.shard[episode]), int(f.offset[episode]), int(f.length[episode]))
        flat = parse_example(self.ds.read_record(split, ref), path=self._paths[split][ref.shard],
                             offset=ref.offset)
        with self._records_lock:
            self._records[episode] = flat
            while len(self._records) > self.cache_records:
                self._records.popitem(last=False)
        return flat


def _stored_as_read(layouts: StepLayouts, part: _Part, items: bool, rows: Any) -> bool:
    """Whether the records at `rows` of `layouts` store `part` as `_group_ranges` reads it: the kind the
    features say, and (numbers) packed floats."""
    return bool((layouts.kind[rows, part.column] == part.wire).all()
                and (items or layouts.packed[rows, part.column].all()))


def _column_values(plan: _Plan, items: Sequence[bytes | memoryview], numbers: Any, copy: bool) -> Any:
    """One read_columns column from its bytes: a numeric key's values from `numbers` (the rows' packed float32,
    one after another) in the feature's dtype (what `read` gives: float16 rounds, float64 widens; always a
    copy, the bytes may be a reused buffer); a camera's `items` (bytes, or as given without `copy`); text
    decoded from `items`."""
    if plan.fast == "numeric":
        return np.frombuffer(numbers, "<f4").astype(plan.leaf.feature.dtype)
    if plan.fast == "image":
        return [bytes(x) for x in items] if copy else list(items)
    return [bytes(x).decode("utf-8", "replace") for x in items]


def _fast_result(plan: _Plan, values: Any, steps: int) -> Any:
    """A one-key leaf's values for `steps` steps (bytes items, or the numbers of a numeric list) -> what a
    request returns: list[bytes] for images, list[str] for text, an array [steps, *shape] in the feature's
    dtype for numbers."""
    if plan.fast == "image":
        return list(values)
    if plan.fast == "text":
        return [v.decode("utf-8", "replace") for v in values]
    feature = plan.leaf.feature
    return np.asarray(values).astype(feature.dtype, copy=False).reshape((steps, *feature.shape))


def _convert(value: Any, per_step: bool, window: tuple[int, int] | None) -> Any:
    """A decoded leaf (the whole episode's when `window` is given) -> the result of a request."""
    if not per_step:
        return value
    if window is not None:
        value = value[window[0]:window[1]]
    if isinstance(value, EncodedImages):
        return list(value.frames)
    if isinstance(value, np.ndarray) and value.dtype == object:
        return list(value)
    return value
