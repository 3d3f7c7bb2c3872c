"""Tensor: an array of fixed dtype and (partly) known shape; TFDS's tensor_feature.Tensor.

Storage in the Example, by `encoding`:
- "none": the values themselves, flattened, in int64_list (ints, bool; uint64 bit-cast to int64) or
  float_list (floats, as float32: float64 comes back rounded to float32, as in TFDS) or bytes_list
  (strings). Outer (sequence) dimensions are simply more values in the same list.
- "bytes": one bytes_list entry per element: the raw little-endian bytes of the array (exact, any dtype).
- "zlib": the same bytes, zlib-compressed.
With two or more unknown dimensions TFDS adds a `<key>/shape` int32 feature and stores the data under
`<key>/value` (possible only with "bytes"/"zlib").
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from rlds_loader.errors import CorruptRecordError, UnknownFeatureTypeError
from rlds_loader.tfds.features.base import (
    BFLOAT16,
    STRING,
    LeafFeature,
    Shape,
    check_dtype,
    dtype_from_str,
    dtype_to_str,
    shape_from_json,
    shape_matches,
    shape_to_json,
)

ENCODINGS = ("none", "bytes", "zlib")


def as_dtype(value: Any, dtype: np.dtype, what: str) -> np.ndarray:
    """value -> array of `dtype`, refusing casts that lose information (float -> int, overflow, text -> bool).

    TFDS refuses any ndarray whose dtype differs; we accept the lossless and the same-kind casts
    (int -> float, float64 -> float32, int64 -> int32 when every value fits) because writers rarely hold
    data in exactly the stored dtype.
    """
    if dtype == STRING:
        arr = np.asarray(value, dtype=object)
        flat = arr.reshape(-1)
        if not all(isinstance(x, str | bytes | bytearray | np.str_ | np.bytes_) for x in flat):
            raise ValueError(f"{what}: expected str or bytes, got {type(flat[0]).__name__ if flat.size else arr}")
        return arr
    if dtype == np.bool_ and isinstance(value, str):
        raise TypeError(f"{what}: the string {value!r} would become True as a bool")
    if not isinstance(value, np.ndarray):
        return np.asarray(value, dtype=dtype)
    if value.dtype == dtype:
        return value
    if value.dtype.kind in "SUO":
        raise ValueError(f"{what}: got strings ({value.dtype}), expected {dtype_to_str(dtype)}")
    if dtype == BFLOAT16 or value.dtype == BFLOAT16:
        if value.dtype.kind in "iu" and dtype == BFLOAT16:
            return value.astype(dtype)
        if (value.dtype.kind == "f" or value.dtype == BFLOAT16) and (dtype.kind == "f" or dtype == BFLOAT16):
            return value.astype(dtype)
        raise ValueError(f"{what}: cannot store {value.dtype} as {dtype_to_str(dtype)}")
    if not np.can_cast(value.dtype, dtype, "same_kind"):
        raise ValueError(f"{what}: cannot store {value.dtype} as {dtype_to_str(dtype)} without loss")
    out = value.astype(dtype)
    if dtype.kind in "iub" and not np.array_equal(out, value):
        raise ValueError(f"{what}: values of {value.dtype} do not fit in {dtype_to_str(dtype)}")
    return out


def default_value(shape: Shape, dtype: np.dtype) -> Any:
    """What TFDS fills in for a missing optional Tensor: dtype minimum, False or b''."""
    if dtype == STRING:
        fill: Any = b""
    elif dtype == np.bool_:
        fill = False
    elif dtype.kind in "iu":
        fill = np.iinfo(dtype).min
    else:
        fill = np.finfo(np.float32 if dtype == BFLOAT16 else dtype).min
    if not shape:
        return np.asarray(fill, dtype)[()]
    return np.full([0 if d is None else d for d in shape], fill, dtype=dtype)


def _little_endian(dtype: np.dtype) -> np.dtype:
    return dtype if dtype.itemsize == 1 or dtype == BFLOAT16 else dtype.newbyteorder("<")


class Tensor(LeafFeature):
    """An array of `dtype` and `shape` (None for unknown dimensions) stored with `encoding`."""

    TFDS_CLASS = "tensor_feature.Tensor"
    JSON_FIELD = "tensor"
    TYPE_NAME = "Tensor"

    def __init__(
        self,
        *,
        shape: Shape,
        dtype: Any,
        encoding: str = "none",
        doc: str = "",
        value_range: str = "",
        minimum: int | None = None,
        maximum: int | None = None,
        optional: bool = False,
    ):
        super().__init__(doc=doc, value_range=value_range)
        self.shape: Shape = tuple(None if d is None or d < 0 else int(d) for d in shape)
        self.dtype = check_dtype(dtype)
        encoding = str(getattr(encoding, "value", encoding)).lower()
        if encoding not in ENCODINGS:
            raise UnknownFeatureTypeError(f"unknown Tensor encoding {encoding!r}, expected one of {ENCODINGS}")
        if encoding != "none" and self.dtype == STRING:
            raise UnknownFeatureTypeError("string Tensors cannot use encoding='bytes' or 'zlib' (nor in TFDS)")
        self.encoding = encoding
        self.minimum = minimum
        self.maximum = maximum
        self.optional = optional

    @property
    def dynamic(self) -> bool:
        """Two or more unknown dimensions: the shape is stored beside the data."""
        return self.shape.count(None) > 1

    def json_content(self) -> dict:
        out: dict[str, Any] = {
            "dtype": dtype_to_str(self.dtype),
            "encoding": self.encoding,
            "shape": shape_to_json(self.shape),
        }
        if self.minimum is not None:
            out["minimum"] = str(self.minimum)
        if self.maximum is not None:
            out["maximum"] = str(self.maximum)
        if self.optional:
            out["optional"] = True
        return out

    @classmethod
    def from_json_content(cls, content: dict, **doc: str) -> Tensor:
        return cls(
            shape=shape_from_json(content.get("shape")),
            dtype=dtype_from_str(content.get("dtype", "")),
            encoding=content.get("encoding") or "none",
            optional=bool(content.get("optional", False)),
            minimum=int(content["minimum"]) if "minimum" in content else None,
            maximum=int(content["maximum"]) if "maximum" in content else None,
            **doc,
        )

    def serialized_parts(self) -> dict[str, tuple[Shape, np.dtype]]:
        data = ((), STRING) if self.encoding != "none" else (self.shape, self.dtype)
        if self.dynamic:
            return {"shape": ((len(self.shape),), np.dtype(np.int32)), "value": data}
        return {"": data}

    def encode_one(self, value: Any) -> dict[str, Any]:
        if value is None and self.optional:
            return {"": None}
        if self.dynamic and self.encoding == "none":
            raise ValueError(f"a Tensor of shape {self.shape} needs encoding='bytes' or 'zlib' (as in TFDS)")
        arr = as_dtype(value, self.dtype, f"Tensor{self.shape} {dtype_to_str(self.dtype)}")
        if not shape_matches(arr.shape, self.shape):
            raise ValueError(f"shape {arr.shape} does not match {self.shape}")
        data: Any = arr[()] if arr.ndim == 0 and self.dtype == STRING else arr  # a str, not a 0-d array
        if self.encoding != "none":
            data = np.ascontiguousarray(arr, dtype=_little_endian(self.dtype)).tobytes()
            if self.encoding == "zlib":
                data = zlib.compress(data)
        if self.dynamic:
            return {"shape": np.array(arr.shape, np.int32), "value": data}
        return {"": data}

    def _decode_bytes(self, data: bytes, shape: tuple[int, ...] | None) -> np.ndarray:
        if self.encoding == "zlib":
            try:
                data = zlib.decompress(data)
            except zlib.error as e:
                raise CorruptRecordError(f"zlib-encoded Tensor does not decompress: {e}") from e
        arr = np.frombuffer(data, dtype=_little_endian(self.dtype))
        want = shape if shape is not None else tuple(-1 if d is None else d for d in self.shape)
        if arr.size == 0 and 0 in want and -1 in want:
            # Nothing tells the unknown length of an empty tensor with a 0-sized dimension (numpy refuses to
            # infer it); TFDS gives 1, so do we.
            want = tuple(1 if d == -1 else d for d in want)
        try:
            return arr.reshape(want).astype(self.dtype, copy=False)
        except ValueError as e:
            raise CorruptRecordError(
                f"encoded Tensor of {arr.size} {dtype_to_str(self.dtype)} values does not fit shape {self.shape}"
            ) from e

    def leaf_decode(self, parts: dict[str, np.ndarray], outer: tuple[int, ...]) -> Any:
        if self.encoding == "none":
            if self.dynamic:
                raise UnknownFeatureTypeError(
                    f"Tensor of shape {self.shape} without encoding cannot be decoded (nor by TFDS)"
                )
            arr = parts[""]
            return arr[()] if arr.ndim == 0 else arr
        values = parts["value" if self.dynamic else ""]
        shapes = parts.get("shape")
        decoded = [
            self._decode_bytes(values[idx], tuple(int(d) for d in shapes[idx]) if self.dynamic else None)
            for idx in np.ndindex(*outer)
        ]
        if not outer:
            return decoded[0]
        if None not in self.shape:
            out = np.empty(tuple(outer) + tuple(self.shape), self.dtype)
            for idx, arr in zip(np.ndindex(*outer), decoded, strict=True):
                out[idx] = arr
            return out
        out = np.empty(outer, object)  # per-element shapes differ: an array of arrays
        for idx, arr in zip(np.ndindex(*outer), decoded, strict=True):
            out[idx] = arr
        return out
