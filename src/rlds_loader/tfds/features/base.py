"""The feature-connector tree: what every feature type shares.

A dataset's features.json is a tree of containers (FeaturesDict, Sequence, Dataset) whose leaves (Tensor,
Scalar, Image, Text, ClassLabel) each own one or two keys of the flat tf.train.Example of an episode:
`steps/observation/image`, or `.../shape` + `.../value` for a Tensor with several unknown dimensions.

Every Sequence or Dataset above a leaf adds one leading "outer" dimension to what the leaf stores (a
Dataset named `steps` adds the T of the episode). The Example flattens everything, so reading a leaf is:
take its key, reshape to outer + inner shape, cast, then let the leaf decode it (`leaf_decode`). With two
or more outer dimensions (a Sequence inside the steps) TFDS stores the values ragged: `.../ragged_flat_values`
plus one `.../ragged_row_lengths_<i>` per inner level (see `codec.py`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rlds_loader.errors import UnknownFeatureTypeError

try:  # bfloat16 is a numpy dtype only through ml_dtypes (a TensorFlow / JAX dependency)
    import ml_dtypes

    BFLOAT16: np.dtype | None = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover
    BFLOAT16 = None

_TFDS_PREFIX = "tensorflow_datasets.core.features."
STRING = np.dtype(object)

Shape = tuple[int | None, ...]


def dtype_from_str(name: str) -> np.dtype:
    """features.json dtype name -> numpy dtype ('string' -> object, the way TFDS stores text)."""
    if name in ("string", "str", "object", "bytes"):
        return STRING
    if name == "bfloat16":
        if BFLOAT16 is None:
            raise UnknownFeatureTypeError("dtype bfloat16 needs the ml_dtypes package")
        return BFLOAT16
    if not isinstance(name, str):
        raise UnknownFeatureTypeError(f"unknown dtype {name!r}")
    try:
        dtype = np.dtype(name)
    # numpy parses "a,b" strings as record dtypes with ast: a malformed one raises SyntaxError
    except (TypeError, ValueError, SyntaxError) as e:
        raise UnknownFeatureTypeError(f"unknown dtype {name!r}") from e
    return check_dtype(dtype)


def check_dtype(dtype: Any) -> np.dtype:
    """Any numpy dtype-like -> one of the dtypes TFDS can store (bool, ints, floats, bfloat16, string)."""
    if dtype in (str, bytes, object, np.str_, np.bytes_):
        return STRING
    dtype = np.dtype(dtype)
    if dtype.kind in "SU":
        return STRING
    if dtype.kind in "biuf" or dtype == BFLOAT16 or dtype == STRING:
        return dtype
    raise UnknownFeatureTypeError(f"dtype {dtype} cannot be stored in a tf.train.Example")


def dtype_to_str(dtype: np.dtype) -> str:
    return "string" if dtype == STRING else np.dtype(dtype).name


def wire_kind(dtype: np.dtype) -> str:
    """Which tf.train.Feature list stores this dtype: 'int64' (ints, bool), 'float' or 'bytes'."""
    if dtype == STRING:
        return "bytes"
    if dtype.kind == "f" or dtype == BFLOAT16:
        return "float"
    return "int64"


def shape_to_json(shape: Shape) -> dict:
    """(8, None, 3) -> {"dimensions": ["8", "-1", "3"]}; () -> {} (proto3 JSON of TFDS's Shape)."""
    return {"dimensions": [str(-1 if d is None else int(d)) for d in shape]} if shape else {}


def shape_from_json(obj: dict | None) -> Shape:
    return tuple(None if int(d) < 0 else int(d) for d in (obj or {}).get("dimensions", []))


def shape_matches(shape: tuple[int, ...], spec: Shape) -> bool:
    return len(shape) == len(spec) and all(s is None or s == d for d, s in zip(shape, spec, strict=True))


@dataclass(frozen=True)
class Leaf:
    """One leaf feature at its place in the tree.

    parts: the names from the root ("steps", "observation", "image"); outer: the lengths of the Sequence /
    Dataset dimensions above it, outermost first (None: variable, e.g. the steps of an episode);
    outer_paths: the path of each of those Sequence / Dataset features ("steps").
    """

    parts: tuple[str, ...]
    feature: LeafFeature
    outer: Shape = ()
    outer_paths: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return "/".join(self.parts)

    def keys(self) -> dict[str, tuple[Shape, np.dtype]]:
        """Flat Example key -> (full serialized shape incl. outer dims, serialized dtype)."""
        return {
            self.path + ("/" + sfx if sfx else ""): (self.outer + shape, dtype)
            for sfx, (shape, dtype) in self.feature.serialized_parts().items()
        }


class FeatureConnector(abc.ABC):
    """Base class of all feature types: JSON (de)serialization and the tree walk.

    `doc` and `value_range` are TFDS's per-feature documentation (`description`, `valueRange` in
    features.json); they are kept so that `to_json` gives back what was read.
    """

    TFDS_CLASS: ClassVar[str]  # e.g. "tensor_feature.Tensor": pythonClassName without the package
    JSON_FIELD: ClassVar[str]  # the Feature proto's oneof field, e.g. "tensor"
    TYPE_NAME: ClassVar[str]  # name shown by describe()

    def __init__(self, *, doc: str = "", value_range: str = ""):
        self.doc = doc
        self.value_range = value_range

    @abc.abstractmethod
    def json_content(self) -> dict:
        """The content of this feature's oneof field in features.json."""

    def to_json(self) -> dict:
        """The Feature proto as TFDS writes it in features.json (camelCase proto3 JSON)."""
        out = {"pythonClassName": _TFDS_PREFIX + self.TFDS_CLASS, self.JSON_FIELD: self.json_content()}
        if self.doc:
            out["description"] = self.doc
        if self.value_range:
            out["valueRange"] = self.value_range
        return out

    @abc.abstractmethod
    def leaves(
        self, parts: tuple[str, ...] = (), outer: Shape = (), outer_paths: tuple[str, ...] = ()
    ) -> Iterator[Leaf]:
        """Every leaf below (or at) this feature, in a stable order, placed under `parts` and `outer`."""

    def describe(self) -> list[tuple[str, str, tuple, str]]:
        """(flat path, type name, decoded shape incl. outer dims, dtype name) for every leaf."""
        return [
            (
                leaf.path,
                leaf.feature.TYPE_NAME,
                tuple(leaf.outer) + tuple(leaf.feature.shape),
                dtype_to_str(leaf.feature.dtype),
            )
            for leaf in self.leaves()
        ]

    @abc.abstractmethod
    def encode(self, value: Any) -> dict[str, Any]:
        """Python/numpy value -> {relative flat key: serialized value, or nested lists of them}."""

    @abc.abstractmethod
    def serialized_specs(self) -> dict[str, tuple[Shape, np.dtype, int]]:
        """Relative flat key -> (serialized shape incl. outer dims, serialized dtype, # of outer dims)."""

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(repr(self.to_json()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.json_content()})"


class LeafFeature(FeatureConnector):
    """A feature that owns keys of the Example: Tensor, Image, Text, ClassLabel."""

    shape: Shape  # decoded shape of one element
    dtype: np.dtype  # decoded dtype

    def leaves(
        self, parts: tuple[str, ...] = (), outer: Shape = (), outer_paths: tuple[str, ...] = ()
    ) -> Iterator[Leaf]:
        yield Leaf(parts, self, outer, outer_paths)

    @abc.abstractmethod
    def serialized_parts(self) -> dict[str, tuple[Shape, np.dtype]]:
        """Key suffix ('' for the leaf's own key) -> (serialized shape of one element, serialized dtype)."""

    @abc.abstractmethod
    def encode_one(self, value: Any) -> dict[str, Any]:
        """One element -> {key suffix: np.ndarray or bytes}."""

    @abc.abstractmethod
    def leaf_decode(self, parts: dict[str, np.ndarray], outer: tuple[int, ...]) -> Any:
        """{key suffix: array of shape outer + serialized shape, serialized dtype} -> decoded value."""

    def encode(self, value: Any) -> dict[str, Any]:
        return self.encode_one(value)

    def serialized_specs(self) -> dict[str, tuple[Shape, np.dtype, int]]:
        return {sfx: (shape, dtype, 0) for sfx, (shape, dtype) in self.serialized_parts().items()}
