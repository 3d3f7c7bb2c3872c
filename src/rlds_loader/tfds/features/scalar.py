"""Scalar: a Tensor of shape (); TFDS's scalar.Scalar (always stored without encoding)."""

from __future__ import annotations

from typing import Any

from rlds_loader.tfds.features.base import dtype_from_str
from rlds_loader.tfds.features.tensor import Tensor


class Scalar(Tensor):
    """One value of `dtype` per element (per step inside `steps`)."""

    TFDS_CLASS = "scalar.Scalar"
    TYPE_NAME = "Scalar"

    def __init__(self, dtype: Any, *, doc: str = "", value_range: str = "", optional: bool = False):
        super().__init__(shape=(), dtype=dtype, doc=doc, value_range=value_range, optional=optional)

    @classmethod
    def from_json_content(cls, content: dict, **doc: str) -> Scalar:
        return cls(
            dtype=dtype_from_str(content.get("dtype", "")),
            optional=bool(content.get("optional", False)),
            **doc,
        )
