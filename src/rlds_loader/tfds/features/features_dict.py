"""FeaturesDict: named sub-features; TFDS's features_dict.FeaturesDict, and the root of every dataset.

Flat Example keys join the names with "/": {"steps": Dataset({"observation": {"image": ...}})} stores
`steps/observation/image`. The root FeaturesDict also carries the episode-level API: `encode_example`,
`decode_example` and `num_steps` (see `codec`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from rlds_loader.tfds.example_proto import FeatureValue
from rlds_loader.tfds.features import codec
from rlds_loader.tfds.features.base import FeatureConnector, Leaf, Shape
from rlds_loader.tfds.features.tensor import Tensor


def to_feature(value: Any) -> FeatureConnector:
    """A connector, a dict of them (-> FeaturesDict) or a dtype (-> scalar Tensor), as TFDS accepts."""
    if isinstance(value, FeatureConnector):
        return value
    if isinstance(value, Mapping):
        return FeaturesDict(value)
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise TypeError(f"not a feature: {value!r}") from None
    from rlds_loader.tfds.features.scalar import Scalar

    return Scalar(dtype)


def _join(name: str, sub: str) -> str:
    return f"{name}/{sub}" if sub else name


class FeaturesDict(FeatureConnector):
    """A dict of named features; values are dicts with exactly these keys."""

    TFDS_CLASS = "features_dict.FeaturesDict"
    JSON_FIELD = "featuresDict"
    TYPE_NAME = "FeaturesDict"

    def __init__(self, features: Mapping[str, Any], *, doc: str = "", value_range: str = ""):
        super().__init__(doc=doc, value_range=value_range)
        self.features: dict[str, FeatureConnector] = {k: to_feature(v) for k, v in features.items()}

    def json_content(self) -> dict:
        return {"features": {k: f.to_json() for k, f in self.features.items()}} if self.features else {}

    @functools.cached_property
    def all_leaves(self) -> tuple[Leaf, ...]:
        """Every leaf of the tree, computed once (the tree is not meant to change after construction)."""
        return tuple(self.leaves())

    def leaves(
        self, parts: tuple[str, ...] = (), outer: Shape = (), outer_paths: tuple[str, ...] = ()
    ) -> Iterator[Leaf]:
        for name, feature in self.features.items():
            yield from feature.leaves(parts + (name,), outer, outer_paths)

    def serialized_specs(self) -> dict[str, tuple[Shape, np.dtype, int]]:
        return {_join(name, k): spec for name, f in self.features.items() for k, spec in f.serialized_specs().items()}

    def encode(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a dict with keys {sorted(self.features)}, got {type(value).__name__}")
        unknown = set(value) - set(self.features)
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}; the features are {sorted(self.features)}")
        out: dict[str, Any] = {}
        for name, feature in self.features.items():
            if name not in value and not (isinstance(feature, Tensor) and feature.optional):
                raise ValueError(f"missing key {name!r}; the features are {sorted(self.features)}")
            try:
                encoded = feature.encode(value.get(name))
            except (ValueError, TypeError) as e:
                raise type(e)(f"{name}: {e}") from e
            out.update({_join(name, k): v for k, v in encoded.items()})
        return out

    # --- episode-level API ------------------------------------------------------------------------

    def encode_example(self, example: Mapping[str, Any]) -> dict[str, FeatureValue]:
        """Nested episode (steps as a list of step dicts or a dict of stacked arrays) -> flat dict for
        `example_proto.serialize_example`: {key: int64 array | float32 array | list of bytes}.

        The values are those TFDS's serializer writes for the same episode (TFDS's key order in the
        message is not deterministic, so compare per key).
        """
        return codec.encode_tree(self, example)

    def decode_example(self, flat: Mapping[str, FeatureValue], keys: Iterable[str] | None = None) -> dict:
        """Flat dict from `parse_example` -> nested dict; only the leaves under `keys` if given.

        Per-step fields are stacked [T, ...] in the spec's dtype, text is `str`, ClassLabel int64, images
        stay encoded (`EncodedImages` per step, `EncodedImage` at episode level).
        """
        return codec.decode_tree(self, flat, keys)

    def num_steps(self, flat: Mapping[str, FeatureValue], key: str = "steps") -> int:
        """T of the episode: the length of the Sequence / Dataset `key`, without decoding anything."""
        return codec.num_steps(self, flat, key)

    # --- dict access ------------------------------------------------------------------------------

    def __getitem__(self, key: str) -> FeatureConnector:
        node: FeatureConnector = self
        for name in key.strip("/").split("/"):
            while hasattr(node, "feature") and not isinstance(node, FeaturesDict):
                node = node.feature  # type: ignore[attr-defined]
            if not isinstance(node, FeaturesDict) or name not in node.features:
                raise KeyError(key)
            node = node.features[name]
        return node

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except (KeyError, AttributeError):
            return False
        return True

    def keys(self):
        return self.features.keys()

    def items(self):
        return self.features.items()

    def __iter__(self) -> Iterator[str]:
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    def __repr__(self) -> str:
        return f"FeaturesDict({self.features!r})"
