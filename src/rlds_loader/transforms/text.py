"""Stored text values (TFDS Text features are UTF-8 bytes) -> Python str."""

from __future__ import annotations

import numpy as np

__all__ = ["to_str"]


def to_str(value: bytes | str | np.generic | np.ndarray) -> str:
    """bytes / str / numpy scalar (or 0-d array) -> str.

    Bytes are decoded as UTF-8 with invalid sequences replaced by U+FFFD, so one badly encoded instruction
    cannot stop a training run. Numbers become their decimal text. Raises TypeError for anything else
    (None, lists, arrays of more than one value), which means a wrong key rather than a text value.
    """
    if isinstance(value, str):
        return str(value)  # np.str_ -> plain str
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return to_str(value.item())
    if isinstance(value, np.generic):
        return to_str(value.item())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"cannot convert {type(value).__name__} to text: {value!r:.80}")
