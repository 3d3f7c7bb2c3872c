"""Episode <-> flat tf.train.Example features, for a whole feature tree.

Encoding follows TFDS's example_serializer: each connector encodes its value to nested lists (one level per
Sequence / Dataset above the leaf); then each flat key becomes one list of values:
  0 or 1 outer dimension  -> `key`: all values flattened (int64 / float32 / bytes);
  2 or more               -> `key/ragged_flat_values` + `key/ragged_row_lengths_<i>`, the lengths of the
                             levels below the outermost (i = 0 is the length of each step's sequence).

Decoding follows TFDS's example_parser (`tf.io.parse_single_example`): a key with only static dimensions
must be present (FixedLenFeature without default), a key with an unknown dimension may be missing and then
means "no elements" (FixedLenSequenceFeature(allow_missing=True)). A per-step key missing from an episode
that has steps is an error here (TFDS fails on it too, when the steps do not line up).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from rlds_loader.errors import CorruptRecordError, FeatureKeyError, UnknownFeatureTypeError
from rlds_loader.tfds.example_proto import FeatureValue
from rlds_loader.tfds.features.base import (
    STRING,
    FeatureConnector,
    Leaf,
    Shape,
    dtype_to_str,
    shape_matches,
    wire_kind,
)
from rlds_loader.tfds.features.tensor import Tensor, default_value

_FLAT = "ragged_flat_values"
_ROWS = "ragged_row_lengths_"


# ----------------------------------------------------------------------------------------------- encode


def _as_bytes(x: Any) -> bytes:
    if isinstance(x, np.ndarray) and x.ndim == 0:
        x = x[()]
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, bytes | bytearray | memoryview):
        return bytes(x)
    raise ValueError(f"expected str or bytes, got {type(x).__name__}")


def _to_wire(arr: np.ndarray, dtype: np.dtype) -> FeatureValue:
    kind = wire_kind(dtype)
    if kind == "bytes":
        return [_as_bytes(x) for x in arr.reshape(-1)]
    if kind == "float":
        return np.asarray(arr, dtype=np.float32).reshape(-1)
    if dtype == np.uint64:  # tf.train.Example has no uint64: bit-cast, as TFDS does
        return np.asarray(arr, np.uint64).view(np.int64).reshape(-1)
    return np.asarray(arr, dtype=np.int64).reshape(-1)


def _as_array(item: Any, shape: Shape, dtype: np.dtype, key: str) -> np.ndarray:
    try:
        arr = np.asarray(item, dtype=object if dtype == STRING else dtype)
    except ValueError as e:
        raise ValueError(f"feature {key!r}: values do not stack to one array of shape {shape}: {e}") from e
    if dtype == STRING and arr.ndim > len(shape) and arr.size == 0:
        arr = arr.reshape(arr.shape[: len(shape)])
    if not shape_matches(arr.shape, shape):
        raise ValueError(f"feature {key!r}: got shape {arr.shape}, expected {shape}")
    return arr


def _ragged(item: Any, shape: Shape, dtype: np.dtype, rank: int, key: str) -> tuple[np.ndarray, list]:
    """Nested lists over `rank` sequence levels -> (stacked innermost values, row lengths of levels 1..)."""
    lengths: list[list[int]] = [[] for _ in range(rank)]
    flat: list[np.ndarray] = []
    inner = shape[rank:]

    def fill(nested: Any, level: int) -> None:
        lengths[level].append(len(nested))
        if shape[level] is not None and shape[level] != len(nested):
            raise ValueError(f"feature {key!r}: sequence of {len(nested)} elements, expected {shape[level]}")
        for sub in nested:
            if level < rank - 1:
                fill(sub, level + 1)
            else:
                flat.append(_as_array(sub, inner, dtype, key))

    fill(item, 0)
    if flat:
        values = np.stack(flat)
    else:
        values = np.empty((0,) + tuple(d or 0 for d in inner), object if dtype == STRING else dtype)
    return values, lengths[1:]


def encode_tree(feature: FeatureConnector, value: Any) -> dict[str, FeatureValue]:
    """Nested python/numpy value -> {flat key: int64 array | float32 array | list of bytes}."""
    encoded = feature.encode(value)
    out: dict[str, FeatureValue] = {}
    for key, (shape, dtype, rank) in feature.serialized_specs().items():
        item = encoded[key]
        if item is None:  # an optional Tensor left out: TFDS writes no key
            continue
        if rank >= 2:
            values, row_lengths = _ragged(item, shape, dtype, rank, key)
            for i, rows in enumerate(row_lengths):
                out[f"{key}/{_ROWS}{i}"] = np.asarray(rows, np.int64)
            out[f"{key}/{_FLAT}"] = _to_wire(values, dtype)
        elif shape.count(None) > 1:
            raise ValueError(
                f"feature {key!r}: shape {shape} has several unknown dimensions, which TFDS cannot "
                "read back; use Tensor(..., encoding='zlib') or 'bytes'"
            )
        else:
            out[key] = _to_wire(_as_array(item, shape, dtype, key), dtype)
    return out


# ----------------------------------------------------------------------------------------------- decode


def _from_wire(raw: FeatureValue, dtype: np.dtype, key: str) -> np.ndarray:
    """Parsed values of one key -> 1-D array of the serialized dtype (object array of bytes for strings)."""
    kind = wire_kind(dtype)
    if isinstance(raw, list):
        if kind == "bytes":
            arr = np.empty(len(raw), object)
            arr[:] = raw
            return arr
        if not raw:
            return np.zeros(0, dtype)
        raise CorruptRecordError(f"feature {key!r} holds bytes, expected {kind} values ({dtype_to_str(dtype)})")
    found = "int64" if raw.dtype == np.int64 else "float"
    if raw.size and found != kind:
        raise CorruptRecordError(f"feature {key!r} holds {found} values, expected {kind} ({dtype_to_str(dtype)})")
    if kind == "bytes":
        return np.empty(0, object)
    return raw.astype(dtype, copy=False)


def _reshape(arr: np.ndarray, shape: Shape, key: str) -> np.ndarray:
    if shape.count(None) > 1:
        raise UnknownFeatureTypeError(
            f"feature {key!r} has shape {shape} with several unknown dimensions and no encoding; it cannot "
            "be read back (TFDS cannot either)"
        )
    try:
        return arr.reshape([-1 if d is None else d for d in shape])
    except ValueError:
        raise CorruptRecordError(f"feature {key!r}: {arr.size} values do not fit shape {shape}") from None


class _Decoder:
    """Decodes the leaves of one record, remembering each sequence's length to check they agree."""

    def __init__(self, root: FeatureConnector, flat: Mapping[str, FeatureValue]):
        self.root = root
        self.flat = flat
        self.lengths: dict[str, tuple[int, str]] = {}

    def _missing(self, leaf: Leaf, key: str, shape: Shape) -> None:
        if None not in shape:
            raise CorruptRecordError(f"record has no feature {key!r}, which features.json declares")
        seq = leaf.outer_paths[0] if leaf.outer_paths else None
        if seq is not None and num_steps(self.root, self.flat, seq) > 0:
            raise CorruptRecordError(f"record has no feature {key!r}, but {seq!r} has elements")

    def _gather(self, leaf: Leaf, key: str, shape: Shape, dtype: np.dtype) -> np.ndarray:
        raw = self.flat.get(key)
        if raw is None:
            self._missing(leaf, key, shape)
            raw = []
        arr = _from_wire(raw, dtype, key)
        if arr.size == 0 and 0 in shape and shape.count(None) == 1:
            # An empty array with a 0-sized dimension does not tell its unknown length (TFDS's parser even
            # crashes on it): per step it is the sequence's length, read from its other keys; else 0.
            n = num_steps(self.root, self.flat, leaf.outer_paths[0]) if leaf.outer and shape[0] is None else 0
            shape = tuple(n if d is None else d for d in shape)
        return _reshape(arr, shape, key)

    def _check_length(self, leaf: Leaf, key: str, n: int) -> None:
        seq = leaf.outer_paths[0]
        seen = self.lengths.setdefault(seq, (n, key))
        if seen[0] != n:
            raise CorruptRecordError(f"{seq!r} has {seen[0]} elements in {seen[1]!r} but {n} in {key!r}")

    def leaf(self, leaf: Leaf) -> Any:
        feature = leaf.feature
        parts = feature.serialized_parts()
        keys = {sfx: leaf.path + ("/" + sfx if sfx else "") for sfx in parts}
        if (
            not leaf.outer
            and isinstance(feature, Tensor)
            and feature.optional
            and all(k not in self.flat for k in keys.values())
        ):
            return default_value(feature.shape, feature.dtype)
        if len(leaf.outer) >= 2:
            return self._ragged_leaf(leaf, parts, keys)
        arrays = {
            sfx: self._gather(leaf, keys[sfx], leaf.outer + shape, dtype) for sfx, (shape, dtype) in parts.items()
        }
        outer: tuple[int, ...] = ()
        if leaf.outer:
            for sfx, arr in arrays.items():
                self._check_length(leaf, keys[sfx], arr.shape[0])
            outer = (next(iter(arrays.values())).shape[0],)
        return feature.leaf_decode(arrays, outer)

    def _ragged_leaf(self, leaf: Leaf, parts: dict, keys: dict[str, str]) -> Any:
        rank = len(leaf.outer)
        nested = {}
        for sfx, (shape, dtype) in parts.items():
            key = keys[sfx]
            full = leaf.outer + shape
            values = self._gather(leaf, f"{key}/{_FLAT}", (None,) + shape, dtype)
            rows = []
            for i in range(rank - 1):
                rkey = f"{key}/{_ROWS}{i}"
                rows.append(
                    self._gather(leaf, rkey, (None,), np.dtype(np.int64))
                    if rkey in self.flat
                    else np.zeros(0, np.int64)
                )
            nested[sfx] = _split(values, rows, full, key)
            self._check_length(leaf, key, len(nested[sfx]))
        return _assemble(leaf, nested, 0)


def _split(values: np.ndarray, rows: list[np.ndarray], shape: Shape, key: str) -> list:
    """Flat values + row lengths -> nested lists whose innermost items are arrays [L, ...]."""
    level: list = []
    pos = 0
    for n in rows[-1]:
        level.append(values[pos : pos + n])
        pos += int(n)
    if pos != len(values):
        raise CorruptRecordError(f"feature {key!r}: row lengths sum to {pos}, there are {len(values)} values")
    for depth in range(len(rows) - 2, -1, -1):
        grouped, pos = [], 0
        for n in rows[depth]:
            grouped.append(level[pos : pos + n])
            pos += int(n)
        if pos != len(level):
            raise CorruptRecordError(f"feature {key!r}: row lengths at level {depth} do not add up")
        level = grouped
    if shape[0] is not None and len(level) != shape[0]:
        raise CorruptRecordError(f"feature {key!r}: {len(level)} elements, expected {shape[0]}")
    for depth, expected in enumerate(shape[1 : len(rows) + 1]):
        if expected is not None and any(len(x) != expected for x in _at_depth(level, depth)):
            raise CorruptRecordError(f"feature {key!r}: a sequence has the wrong length (expected {expected})")
    return level


def _at_depth(level: list, depth: int) -> list:
    for _ in range(depth):
        level = [y for x in level for y in x]
    return level


def _assemble(leaf: Leaf, nested: dict[str, list], depth: int) -> Any:
    """Decode the innermost arrays with the leaf, then stack or box each level above."""
    rank = len(leaf.outer)
    first = next(iter(nested.values()))
    if depth == rank - 1:
        return leaf.feature.leaf_decode(dict(nested), (len(first),))
    children = [_assemble(leaf, {s: v[i] for s, v in nested.items()}, depth + 1) for i in range(len(first))]
    static = all(d is not None for d in leaf.outer[depth + 1 :])
    if static and children and all(isinstance(c, np.ndarray) and c.dtype != object for c in children):
        if len({c.shape for c in children}) == 1:
            return np.stack(children)
    if static and not children and isinstance(leaf.feature, Tensor) and None not in leaf.feature.shape:
        return np.zeros((0,) + tuple(leaf.outer[depth + 1 :]) + tuple(leaf.feature.shape), leaf.feature.dtype)
    out = np.empty(len(children), object)
    for i, c in enumerate(children):
        out[i] = c
    return out


def _leaves(root: FeatureConnector) -> tuple[Leaf, ...]:
    cached = getattr(root, "all_leaves", None)
    return cached if cached is not None else tuple(root.leaves())


def select_leaves(root: FeatureConnector, keys: Iterable[str] | None) -> list[Leaf]:
    """The leaves named by `keys` (exact paths or prefixes such as "steps/observation"), in tree order."""
    leaves = _leaves(root)
    if keys is None:
        return list(leaves)
    if isinstance(keys, str):
        keys = [keys]
    wanted: set[str] = set()
    for k in keys:
        k = k.strip("/")
        match = [leaf.path for leaf in leaves if leaf.path == k or leaf.path.startswith(k + "/") or not k]
        if not match:
            raise FeatureKeyError(f"no feature {k!r}; the features are: {', '.join(x.path for x in leaves)}")
        wanted.update(match)
    return [leaf for leaf in leaves if leaf.path in wanted]


def decode_tree(root: FeatureConnector, flat: Mapping[str, FeatureValue], keys: Iterable[str] | None = None) -> dict:
    """Flat parsed Example -> nested dict of decoded values (only the leaves selected by `keys`; every
    FeaturesDict with no leaves at all, e.g. an empty one, appears as {} when all keys are decoded)."""
    decoder = _Decoder(root, flat)
    out: dict = {}
    if keys is None:
        _empty_dicts(root, out)
    for leaf in select_leaves(root, keys):
        node = out
        for name in leaf.parts[:-1]:
            node = node.setdefault(name, {})
        node[leaf.parts[-1]] = decoder.leaf(leaf)
    return out


def _empty_dicts(feature: FeatureConnector, out: dict) -> None:
    """Put {} in `out` for every FeaturesDict under `feature` (through Sequences and Datasets, which decode
    to dicts of stacked values): TFDS decodes one that holds no leaf to {}; the others get filled by their
    leaves. Duck-typed (`.features` of a dict, `.feature` of a sequence): those classes import this module."""
    while getattr(feature, "feature", None) is not None:
        feature = feature.feature
    for name, child in (getattr(feature, "features", None) or {}).items():
        inner = child
        while getattr(inner, "feature", None) is not None:
            inner = inner.feature
        if isinstance(getattr(inner, "features", None), Mapping):
            _empty_dicts(inner, out.setdefault(name, {}))


def num_steps(root: FeatureConnector, flat: Mapping[str, FeatureValue], key: str = "steps") -> int:
    """Number of elements of the outermost Sequence / Dataset at `key` in this record, without decoding.

    Reads the length of the first of its keys present in the record: a ragged key's first row lengths, or
    a plain key's value count divided by the size of one element. No key present: 0 (TFDS's allow_missing).
    """
    key = key.strip("/")
    leaves = [leaf for leaf in _leaves(root) if leaf.outer_paths and leaf.outer_paths[0] == key]
    if not leaves:
        seqs = sorted({leaf.outer_paths[0] for leaf in _leaves(root) if leaf.outer_paths})
        raise FeatureKeyError(f"{key!r} is not a top-level Sequence or Dataset; those are: {seqs}")
    for leaf in leaves:
        for k, (shape, _) in leaf.keys().items():
            if len(leaf.outer) >= 2:
                rows = flat.get(f"{k}/{_ROWS}0")
                if rows is not None:
                    return len(rows)
                continue
            raw = flat.get(k)
            inner = shape[1:]
            if raw is None or None in inner or 0 in inner:
                continue
            size = int(np.prod(inner, dtype=np.int64))
            if len(raw) % size:
                raise CorruptRecordError(f"feature {k!r}: {len(raw)} values are not a multiple of {size}")
            return len(raw) // size
    return 0
