"""Helpers shared by the tests that compare loader batches: take n, compare trees bit for bit, join hosts."""

from __future__ import annotations

import numpy as np


def take(loader, n: int) -> list:
    """The next n batches of an iterable, without asking for an (n+1)-th: that would move the position."""
    out: list = []
    if n == 0:
        return out
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def assert_tree_equal(a, b, where: str = "batch") -> None:
    """Two dicts of numpy arrays equal in keys, types, dtypes, shapes and bytes (float bits included)."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_tree_equal(a[key], b[key], f"{where}/{key}")
    else:
        assert isinstance(a, np.ndarray), (where, type(a))
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b), where  # bit for bit (no NaNs in our data)
        if a.dtype.kind == "f":
            assert a.tobytes() == b.tobytes(), where


def concat_hosts(parts: list[dict]) -> dict:
    """Per-host batches (same structure) -> the global batch, rows in host order."""
    first = parts[0]
    return {k: (concat_hosts([p[k] for p in parts]) if isinstance(v, dict)
                else np.concatenate([p[k] for p in parts])) for k, v in first.items()}
