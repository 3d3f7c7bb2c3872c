"""Sequence: a list of elements of one feature, stacked; TFDS's sequence_feature.Sequence.

Every leaf below gets one more leading dimension (`length`, or None when it varies). When writing, the
value may be a list of elements, a stacked array, or a dict of lists/arrays (transposed into elements).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from rlds_loader.tfds.features.base import FeatureConnector, Leaf, Shape


def to_elements(value: Any) -> list[Any]:
    """A sequence value -> its list of elements.

    A dict of per-element lists/arrays (possibly nested) becomes a list of dicts, as TFDS's
    transpose_dict_list does; a numpy array is split along its first axis.
    """
    if isinstance(value, Mapping):
        lengths: set[int] = set()

        def as_list(v: Any) -> Any:
            if isinstance(v, Mapping):
                return {k: as_list(x) for k, x in v.items()}
            if isinstance(v, np.ndarray | list | tuple):
                lengths.add(len(v))
                return v
            raise ValueError(f"a sequence given as a dict needs lists or arrays as values, got {type(v).__name__}")

        def pick(v: Any, i: int) -> Any:
            return {k: pick(x, i) for k, x in v.items()} if isinstance(v, Mapping) else v[i]

        listed = as_list(value)
        if len(lengths) > 1:
            raise ValueError(f"all values of one sequence must have the same length, got {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        return [pick(listed, i) for i in range(n)]
    if isinstance(value, str | bytes):
        raise ValueError(f"a sequence needs a list, array or dict, got {type(value).__name__}")
    return list(value)


class Sequence(FeatureConnector):
    """`length` elements (None: any number) of `feature`."""

    TFDS_CLASS = "sequence_feature.Sequence"
    JSON_FIELD = "sequence"
    TYPE_NAME = "Sequence"

    def __init__(self, feature: Any, length: int | None = None, *, doc: str = "", value_range: str = ""):
        from rlds_loader.tfds.features.features_dict import to_feature

        super().__init__(doc=doc, value_range=value_range)
        self.feature = to_feature(feature)
        self.length = None if length is None or length < 0 else int(length)

    def json_content(self) -> dict:
        out: dict[str, Any] = {"feature": self.feature.to_json()}
        length = -1 if self.length is None else self.length
        if length:  # proto3 JSON leaves out a 0
            out["length"] = str(length)
        return out

    def leaves(
        self, parts: tuple[str, ...] = (), outer: Shape = (), outer_paths: tuple[str, ...] = ()
    ) -> Iterator[Leaf]:
        yield from self.feature.leaves(parts, outer + (self.length,), outer_paths + ("/".join(parts),))

    def serialized_specs(self) -> dict[str, tuple[Shape, np.dtype, int]]:
        return {
            k: ((self.length,) + shape, dtype, rank + 1)
            for k, (shape, dtype, rank) in self.feature.serialized_specs().items()
        }

    def encode(self, value: Any) -> dict[str, Any]:
        elements = to_elements(value)
        if self.length is not None and len(elements) != self.length:
            raise ValueError(f"sequence has {len(elements)} elements, the feature expects {self.length}")
        if not elements:  # empty arrays with the right trailing shape, as TFDS's build_empty_np
            return {
                k: np.empty((0,) + tuple(d or 0 for d in shape), dtype)
                for k, (shape, dtype, _) in self.feature.serialized_specs().items()
            }
        encoded = [self.feature.encode(e) for e in elements]
        return {k: [e[k] for e in encoded] for k in encoded[0]}

    def __getitem__(self, key: str) -> FeatureConnector:
        return self.feature[key]  # type: ignore[index]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.feature!r}, length={self.length})"
