"""Per-dimension normalization of state / action vectors with precomputed statistics, and its inverse.

``normalize(x, stats, mode, mask)`` maps each selected dimension ``i`` of ``x [..., D]`` as:

- ``None``:         identity (the result is still float32);
- ``"normal"``:     ``(x - mean) / std``;
- ``"bounds"``:     ``2 * (x - min) / (max - min) - 1``: ``[min, max] -> [-1, 1]`` (not clipped);
- ``"bounds_q99"``: ``2 * (x - q01) / (q99 - q01) - 1``, then clipped to ``[-1, 1]`` (outliers saturate).

``unnormalize`` is the inverse map (for ``bounds_q99`` only inside ``[q01, q99]``, since clipping loses
what lies outside). A dimension whose scale is zero (``std == 0``, ``max == min``, ``q99 == q01``, i.e. it
was constant in the statistics) normalizes to 0 and unnormalizes back to its constant (``mean``, ``min``,
``q01``), without dividing by zero. ``mask[i] == False`` leaves dimension ``i`` untouched (e.g. a gripper
command that is already in [0, 1]).

The arithmetic runs in float64 and the result is float32, so a round trip is exact to float32 precision.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rlds_loader.errors import ConfigError

__all__ = ["MODES", "normalize", "unnormalize"]

# mode -> (statistic giving the offset, statistic giving the scale, how the scale is read)
MODES: dict[str | None, tuple[str, str, str] | None] = {
    None: None,
    "normal": ("mean", "std", "std"),
    "bounds": ("min", "max", "range"),
    "bounds_q99": ("q01", "q99", "range"),
}


def normalize(
    x: np.ndarray,
    stats: Mapping[str, np.ndarray],
    mode: str | None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Raw values ``x [..., D]`` -> normalized float32 ``[..., D]`` (the maps are in the module docstring)."""
    x, parts = _prepare(x, stats, mode, mask)
    if parts is None:
        return x.astype(np.float32)
    offset, scale, zero, select = parts
    y = (x - offset) / scale
    if mode != "normal":
        y = 2.0 * y - 1.0
    if mode == "bounds_q99":
        np.clip(y, -1.0, 1.0, out=y)
    y = np.where(zero, 0.0, y)
    return np.where(select, y, x).astype(np.float32)


def unnormalize(
    x: np.ndarray,
    stats: Mapping[str, np.ndarray],
    mode: str | None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Normalized values ``x [..., D]`` -> raw float32 ``[..., D]``: the inverse of :func:`normalize`.

    Zero-scale dimensions map to their constant whatever ``x`` holds; masked-out dimensions are copied.
    """
    x, parts = _prepare(x, stats, mode, mask)
    if parts is None:
        return x.astype(np.float32)
    offset, scale, zero, select = parts
    y = x if mode == "normal" else (x + 1.0) / 2.0
    y = y * scale + offset
    y = np.where(zero, offset, y)
    return np.where(select, y, x).astype(np.float32)


def _prepare(x, stats, mode, mask):
    """Validate; return (x as float64, None) for mode None, else (x, (offset, scale, zero, select))."""
    if mode not in MODES:
        valid = ", ".join(repr(m) for m in MODES)
        raise ConfigError(f"unknown normalization mode {mode!r}; valid modes are {valid}")
    x = np.asarray(x)
    if x.ndim == 0:
        raise ConfigError("normalize expects values of shape [..., D], got a scalar")
    if x.dtype.kind not in "biuf":
        raise ConfigError(f"normalize expects numeric values, got dtype {x.dtype}")
    dim = x.shape[-1]
    x = x.astype(np.float64)
    select = np.ones(dim, bool) if mask is None else np.asarray(mask)
    if select.dtype != np.bool_ or select.shape != (dim,):
        raise ConfigError(
            f"normalization mask must be bool of shape ({dim},) to match the values, "
            f"got {select.dtype} of shape {select.shape}"
        )
    spec = MODES[mode]
    if spec is None:
        return x, None
    low_key, high_key, kind = spec
    low = _stat(stats, low_key, dim, mode)
    high = _stat(stats, high_key, dim, mode)
    if kind == "std":
        offset, width = low, high
    else:
        offset, width = low, high - low
    zero = width == 0
    scale = np.where(zero, 1.0, width)
    return x, (offset, scale, zero, select)


def _stat(stats: Mapping[str, np.ndarray], key: str, dim: int, mode: str) -> np.ndarray:
    if key not in stats:
        raise ConfigError(
            f"normalization mode {mode!r} needs statistic {key!r}; the statistics have {sorted(stats)}"
        )
    value = np.asarray(stats[key], dtype=np.float64)
    if value.shape != (dim,):
        raise ConfigError(
            f"statistic {key!r} has shape {value.shape} but the values have {dim} dimensions; "
            f"statistics must have exactly one entry per dimension"
        )
    return value
