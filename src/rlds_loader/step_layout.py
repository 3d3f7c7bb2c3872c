"""Byte layouts of a split's episode records, captured by the index scan, so a step is read without its episode.

For every episode record and every flat key of a fixed, sorted key list (`LayoutSpec.keys`: the Example keys
of the features that are per episode or per step), the index keeps where the key's values sit (see
`tfds.example_layout`): the region [start, end) relative to the record's data start, the kind (code, below)
and the packed flag, as [E, K] arrays. For per-step keys holding one bytes item per step (images, text,
bytes/zlib-encoded tensors: `LayoutSpec.item_keys`), it also keeps each step's item (offset, length)
relative to the record's data start, as [F, B] arrays over all frames of the split (row = first frame of the
episode + step): 8 bytes per frame per such key. uint32 is enough: a record is below 4 GiB (a larger one
gets no layout).

Kind codes: -2 no layout (the reader reads the whole record), -1 key absent from the record, 0 no list set,
1 bytes, 2 float, 3 int64.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlds_loader.tfds.example_layout import FieldLayout, bytes_items, decode_floats, decode_int64s, layout
from rlds_loader.tfds.features.base import STRING

UNKNOWN, MISSING = -2, -1
KIND_CODES = {"none": 0, "bytes": 1, "float": 2, "int64": 3}
KIND_NAMES = {v: k for k, v in KIND_CODES.items()}
STEPS = "steps"
_U32 = 1 << 32

# cache member name -> StepLayouts attribute
ARRAYS = {"layout_start": "start", "layout_end": "end", "layout_kind": "kind", "layout_packed": "packed",
          "item_offset": "item_offset", "item_length": "item_length"}


@dataclass(frozen=True)
class LayoutSpec:
    """Which keys a dataset's layouts cover: `keys` (sorted flat Example keys of every leaf with at most one
    sequence dimension) and `item_keys` (sorted per-step keys with one bytes item per step)."""

    keys: tuple[str, ...]
    item_keys: tuple[str, ...]

    @staticmethod
    def from_features(features: Any) -> LayoutSpec:
        keys: set[str] = set()
        items: set[str] = set()
        for leaf in features.all_leaves:
            if len(leaf.outer) > 1:
                continue  # ragged (a sequence inside the steps): read through the whole record
            per_step = leaf.outer_paths == (STEPS,)
            for key, (shape, dtype) in leaf.keys().items():
                keys.add(key)
                if per_step and dtype == STRING and shape[1:] == ():
                    items.add(key)
        return LayoutSpec(tuple(sorted(keys)), tuple(sorted(items)))


class _Count:
    """Stands for a key's parsed values where only their number matters (`features.num_steps`)."""

    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def value_count(buf: bytes, fl: FieldLayout) -> int:
    """How many values `parse_example` would give for a key, from its layout."""
    if fl.kind == "none":
        return 0
    if fl.kind == "bytes":
        return len(bytes_items(buf, fl)[0])
    region = memoryview(buf)[fl.start:fl.end]
    if fl.packed:
        return len(region) // 4 if fl.kind == "float" else int(np.count_nonzero(np.frombuffer(region, np.uint8) < 0x80))
    return len(decode_floats(region, False) if fl.kind == "float" else decode_int64s(region, False))


def count_steps(features: Any, buf: bytes, fields: Mapping[str, FieldLayout]) -> int:
    """The episode's number of steps as `features.num_steps(parse_example(buf))` gives it, from the layout."""

    class Counts(dict):
        def get(self, key: str, default: Any = None) -> Any:
            fl = fields.get(key)
            return default if fl is None else _Count(value_count(buf, fl))

    return int(features.num_steps(Counts()))


@dataclass(frozen=True)
class RecordLayout:
    """One record's row of the layout tables (see the module docstring)."""

    start: np.ndarray  # uint32 [K]
    end: np.ndarray  # uint32 [K]
    kind: np.ndarray  # int8 [K]
    packed: np.ndarray  # bool [K]
    item_offset: np.ndarray  # uint32 [T, B]
    item_length: np.ndarray  # uint32 [T, B]

    @staticmethod
    def unknown(spec: LayoutSpec, num_steps: int) -> RecordLayout:
        k, b = len(spec.keys), len(spec.item_keys)
        return RecordLayout(np.zeros(k, np.uint32), np.zeros(k, np.uint32), np.full(k, UNKNOWN, np.int8),
                            np.zeros(k, bool), np.zeros((num_steps, b), np.uint32), np.zeros((num_steps, b), np.uint32))


def record_layout(spec: LayoutSpec, buf: bytes, fields: Mapping[str, FieldLayout], num_steps: int) -> RecordLayout:
    """A record's row, from its `layout(buf)`. An item key whose item count is not the episode's number of
    steps (a corrupt record) gets kind UNKNOWN, so the reader goes through the whole record and its checks."""
    row = RecordLayout.unknown(spec, num_steps)
    if len(buf) >= _U32:
        return row
    for i, key in enumerate(spec.keys):
        fl = fields.get(key)
        if fl is None:
            row.kind[i] = MISSING
            continue
        row.kind[i] = KIND_CODES[fl.kind]
        row.start[i], row.end[i], row.packed[i] = fl.start, fl.end, fl.packed
    index = {k: i for i, k in enumerate(spec.keys)}
    for j, key in enumerate(spec.item_keys):
        fl = fields.get(key)
        if fl is None or fl.kind == "none":
            continue  # absent / empty: the reader decodes it like the full path does (error or no steps)
        if fl.kind != "bytes":
            row.kind[index[key]] = UNKNOWN
            continue
        offsets, lengths = bytes_items(buf, fl)
        if len(offsets) != num_steps:
            row.kind[index[key]] = UNKNOWN
            continue
        row.item_offset[:, j] = offsets
        row.item_length[:, j] = lengths
    return row


def scan_record(features: Any, spec: LayoutSpec, buf: bytes) -> tuple[int, RecordLayout]:
    """(number of steps, layout row) of one record, without parsing it. Raises on a record that the layout
    cannot describe (malformed, or values split over several messages): the caller then parses it."""
    fields = layout(buf)
    steps = count_steps(features, buf, fields)
    return steps, record_layout(spec, buf, fields, steps)


@dataclass(frozen=True)
class StepLayouts:
    """The layout tables of one whole split (rows in EpisodeTable order); see the module docstring.

    `item_first[e]` is the row of episode e's step 0 in the item arrays. Arrays may be memory-mapped from
    the index cache; then pickling sends the cache path, not the arrays (cheap for process workers).
    """

    keys: tuple[str, ...]
    item_keys: tuple[str, ...]
    start: np.ndarray  # uint32 [E, K]
    end: np.ndarray  # uint32 [E, K]
    kind: np.ndarray  # int8 [E, K]
    packed: np.ndarray  # bool [E, K]
    item_offset: np.ndarray  # uint32 [F, B]
    item_length: np.ndarray  # uint32 [F, B]
    item_first: np.ndarray  # int64 [E+1]
    source: str | None = None  # local cache file the arrays are mapped from

    @staticmethod
    def from_rows(spec: LayoutSpec, rows: list[RecordLayout]) -> StepLayouts:
        k, b = len(spec.keys), len(spec.item_keys)

        def stack(name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            return np.stack([getattr(r, name) for r in rows]) if rows else np.zeros(shape, dtype)

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(r, name) for r in rows]) if rows else np.zeros((0, b), np.uint32)

        first = np.concatenate([[0], np.cumsum([len(r.item_offset) for r in rows], dtype=np.int64)])
        return StepLayouts(spec.keys, spec.item_keys, stack("start", (0, k), np.uint32),
                           stack("end", (0, k), np.uint32), stack("kind", (0, k), np.int8),
                           stack("packed", (0, k), bool), cat("item_offset"), cat("item_length"),
                           first.astype(np.int64))

    def meta(self) -> dict:
        return {"layout_keys": list(self.keys), "item_keys": list(self.item_keys)}

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, attr) for name, attr in ARRAYS.items()}

    @staticmethod
    def from_cache(meta: dict, arrays: Mapping[str, np.ndarray], num_steps: np.ndarray,
                   source: str | None = None) -> StepLayouts | None:
        """The layouts saved by `meta()` / `arrays()`, or None if the cache has none (e.g. ArrayRecord)."""
        if "layout_keys" not in meta or any(name not in arrays for name in ARRAYS):
            return None
        first = np.concatenate([[0], np.cumsum(np.asarray(num_steps), dtype=np.int64)])
        got = {attr: arrays[name] for name, attr in ARRAYS.items()}
        out = StepLayouts(tuple(meta["layout_keys"]), tuple(meta["item_keys"]), item_first=first,
                          source=source, **got)
        if out.start.shape != (len(num_steps), len(out.keys)) or len(out.item_offset) != first[-1]:
            raise ValueError("index cache layout arrays do not match its episode table")
        return out

    def __reduce__(self):
        if self.source is None:
            return super().__reduce__()
        return (_reload, (self.source, self.meta(), self.item_first))


def _reload(source: str, meta: dict, item_first: np.ndarray) -> StepLayouts:
    from rlds_loader import npz_mmap

    arrays = npz_mmap.load_local(source, mmap=tuple(ARRAYS))
    out = StepLayouts.from_cache(meta, arrays, np.diff(item_first), source=source)
    assert out is not None
    return out
