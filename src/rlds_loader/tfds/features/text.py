"""Text: one UTF-8 string per element; TFDS's text_feature.Text.

Stored as a bytes_list entry per element. Decoded to `str` (TFDS gives bytes): a scalar `str` at episode
level, a numpy object array of `str` per step. Invalid UTF-8, which some real datasets contain, is
replaced by U+FFFD rather than failing a training job.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlds_loader.tfds.features.base import STRING
from rlds_loader.tfds.features.tensor import Tensor


def _to_str(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)


class Text(Tensor):
    """A string per element (TFDS without a text encoder; encoder-based Text is deprecated there)."""

    TFDS_CLASS = "text_feature.Text"
    JSON_FIELD = "text"
    TYPE_NAME = "Text"

    def __init__(self, *, doc: str = "", value_range: str = ""):
        super().__init__(shape=(), dtype=STRING, doc=doc, value_range=value_range)

    def json_content(self) -> dict:
        return {}

    @classmethod
    def from_json_content(cls, content: dict, **doc: str) -> Text:
        return cls(**doc)

    def leaf_decode(self, parts: dict[str, np.ndarray], outer: tuple[int, ...]) -> Any:
        arr = parts[""]
        if arr.ndim == 0:
            return _to_str(arr[()])
        out = np.empty(arr.shape, object)
        out.reshape(-1)[:] = [_to_str(x) for x in arr.reshape(-1)]
        return out
