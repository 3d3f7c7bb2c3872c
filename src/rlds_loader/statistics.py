"""Statistics of per-frame vectors (states, actions) for normalization: mergeable and exact enough.

``StatsAccumulator(dim)`` takes frames ``[N, D]`` chunk by chunk (per episode, per shard, per worker), merges
with other accumulators in any order, and finalizes to the statistics ``normalize`` reads::

    {"mean", "std", "min", "max", "q01", "q99"}: float32 [D],  "num_frames", "num_episodes": int

``std`` is the population standard deviation (ddof 0, as ``np.std``); ``q01`` / ``q99`` are the 1% / 99%
quantiles with numpy's default "linear" method. Values are taken as float32 (the loader's vectors are).

How each statistic is computed
------------------------------
- mean / std: float64 count, mean and sum of squared deviations per dimension, merged with Chan et al.'s
  pairwise update (numerically stable for any chunking).
- min / max: exact.
- quantiles, while the accumulator holds at most ``exact_limit`` frames: the values themselves are kept and
  finalize sorts them, so every statistic (mean and std too) is a function of the multiset of values only:
  any chunking and any merge order give bit-identical results, equal to numpy on the concatenated data.
- quantiles beyond ``exact_limit`` frames: a histogram per dimension on an aligned power-of-two grid. Bin
  ``i`` is ``[i * 2**e, (i + 1) * 2**e)``, with ``e`` the smallest exponent for which ``[min, max]`` spans
  at most ``bins`` bins. When the range grows, ``e`` grows and neighbouring bins merge exactly (integer
  shifts of bin numbers), so no count is ever smeared into a bin that does not contain its value, and the
  histogram of a set of values is the same whatever the chunking or merge order (bit-identical quantiles).
  A quantile is numpy's linear interpolation between two order statistics, each estimated inside the bin
  that holds it (linearly by rank, clamped to [min, max]). **Error bound**: every order statistic lies in
  its bin, so the result differs from ``np.quantile(values, q)`` by less than one bin width
  ``2**e < 2 * (max - min) / (bins - 1)``: below 2.5e-4 of the data range for the default 8192 bins
  (the brief's bound is 1e-3 of the range), plus float64 rounding.

Memory: exact mode keeps 4 bytes per value (up to ``4 * exact_limit * D`` bytes, 16 MiB per dimension for
the default 2**22 frames); sketch mode 8 bytes per bin per dimension (64 KiB per dimension).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlds_loader.errors import ConfigError

__all__ = [
    "QUANTILES",
    "STAT_KEYS",
    "StatsAccumulator",
    "pool_statistics",
    "stats_from_json",
    "stats_to_json",
]

STAT_KEYS = ("mean", "std", "min", "max", "q01", "q99")
QUANTILES = {"q01": 0.01, "q99": 0.99}
_E_MIN = -1000  # smallest bin exponent: 2**-_E_MIN is a normal float64


class StatsAccumulator:
    """Running statistics of frames ``[N, dim]``; see the module docstring for the methods and bounds."""

    def __init__(self, dim: int, *, exact_limit: int = 2**22, bins: int = 8192):
        if int(dim) != dim or dim < 0:
            raise ValueError(f"dim must be a non-negative integer, got {dim!r}")
        if int(exact_limit) != exact_limit or exact_limit < 0:
            raise ValueError(f"exact_limit must be a non-negative integer, got {exact_limit!r}")
        if int(bins) != bins or bins < 64:
            raise ValueError(f"bins must be an integer >= 64, got {bins!r}")
        self.dim = int(dim)
        self.exact_limit = int(exact_limit)
        self.bins = int(bins)
        self.num_frames = 0
        self.num_episodes = 0
        self._mean = np.zeros(self.dim, np.float64)
        self._m2 = np.zeros(self.dim, np.float64)
        self._min = np.full(self.dim, np.inf)
        self._max = np.full(self.dim, -np.inf)
        self._chunks: list[np.ndarray] | None = []  # exact mode: float32 [n, dim] arrays, never mutated
        self._hist: _Histogram | None = None  # sketch mode

    def __repr__(self) -> str:
        mode = "exact" if self._chunks is not None else "sketch"
        return (f"StatsAccumulator(dim={self.dim}, frames={self.num_frames}, episodes={self.num_episodes}, "
                f"{mode})")

    @property
    def is_exact(self) -> bool:
        """True while the values are kept (quantiles exact); False once the histogram sketch took over."""
        return self._chunks is not None

    def update(self, values: np.ndarray) -> StatsAccumulator:
        """Add frames ``values [N, dim]`` (``[N]`` when dim is 1). Returns self. Raises ValueError on a wrong
        shape or a non-finite value (a NaN would poison every statistic of its dimension)."""
        x = np.asarray(values)
        if x.ndim == 1 and self.dim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected values of shape [N, {self.dim}], got {x.shape}")
        if x.dtype.kind not in "biuf":
            raise ValueError(f"expected numeric values, got dtype {x.dtype}")
        x = np.array(x, dtype=np.float32, copy=True)  # our own copy: chunks are shared by merges
        if x.shape[0] == 0:
            return self
        if not np.isfinite(x).all():
            bad = np.flatnonzero(~np.isfinite(x).all(axis=0)).tolist()
            raise ValueError(f"values contain NaN or infinity in dimensions {bad}")
        x64 = x.astype(np.float64)
        n = x.shape[0]
        chunk_mean = x64.mean(axis=0)
        chunk_m2 = np.square(x64 - chunk_mean).sum(axis=0)
        self._combine_moments(n, chunk_mean, chunk_m2)
        np.minimum(self._min, x64.min(axis=0), out=self._min)
        np.maximum(self._max, x64.max(axis=0), out=self._max)
        if self._chunks is not None:
            self._chunks.append(x)
            if self.num_frames > self.exact_limit:
                self._to_sketch()
        else:
            self._hist = self._hist.grown(self._min, self._max)  # type: ignore[union-attr]
            self._hist.add(x64)
        return self

    def add_episode(self, count: int = 1) -> StatsAccumulator:
        """Count ``count`` more episodes (frames are counted by ``update``). Returns self."""
        if int(count) != count or count < 0:
            raise ValueError(f"episode count must be a non-negative integer, got {count!r}")
        self.num_episodes += int(count)
        return self

    def merge(self, other: StatsAccumulator) -> StatsAccumulator:
        """A new accumulator holding the frames and episodes of both (neither input changes)."""
        if not isinstance(other, StatsAccumulator):
            raise TypeError(f"can only merge a StatsAccumulator, got {type(other).__name__}")
        if (other.dim, other.exact_limit, other.bins) != (self.dim, self.exact_limit, self.bins):
            mine, theirs = (self.dim, self.exact_limit, self.bins), (other.dim, other.exact_limit, other.bins)
            raise ValueError(f"cannot merge accumulators of (dim, exact_limit, bins) {mine} and {theirs}")
        out = StatsAccumulator(self.dim, exact_limit=self.exact_limit, bins=self.bins)
        out.num_episodes = self.num_episodes + other.num_episodes
        for acc in (self, other):
            out._combine_moments(acc.num_frames, acc._mean, acc._m2)
        out._min = np.minimum(self._min, other._min)
        out._max = np.maximum(self._max, other._max)
        if self._chunks is not None and other._chunks is not None and out.num_frames <= out.exact_limit:
            out._chunks = self._chunks + other._chunks
            return out
        out._chunks = None
        out._hist = _Histogram.empty(out._min, out._max, out.bins)
        for acc in (self, other):
            if acc._hist is not None:
                out._hist.add_histogram(acc._hist)
            else:
                for chunk in acc._chunks or ():
                    out._hist.add(chunk.astype(np.float64))
        return out

    def finalize(self) -> dict[str, Any]:
        """The statistics dict (see the module docstring). Raises ValueError when no frame was added."""
        if self.num_frames == 0:
            raise ValueError("cannot compute statistics of zero frames")
        n = self.num_frames
        if self._chunks is not None:
            # Sorted values: the result depends on the multiset only, not on chunking or merge order.
            rows = np.sort(np.concatenate(self._chunks, axis=0).T, axis=1).astype(np.float64)  # [D, n]
            mean = rows.mean(axis=1)
            std = np.sqrt(np.square(rows - mean[:, None]).mean(axis=1))
            q = np.quantile(rows, list(QUANTILES.values()), axis=1, method="linear")
            quantiles = dict(zip(QUANTILES, q, strict=True))
        else:
            mean = self._mean.copy()
            std = np.sqrt(np.maximum(self._m2 / n, 0.0))
            quantiles = {k: self._hist.quantile(v, n) for k, v in QUANTILES.items()}  # type: ignore[union-attr]
        constant = self._min == self._max  # rounding must not invent a spread: exact constant, std 0
        mean = np.where(constant, self._min, mean)
        std = np.where(constant, 0.0, std)
        result: dict[str, Any] = {"mean": mean, "std": std, "min": self._min, "max": self._max}
        for k, v in quantiles.items():
            result[k] = np.clip(np.where(constant, self._min, v), self._min, self._max)
        result = {k: np.asarray(v, np.float32) for k, v in result.items()}
        result["num_frames"] = int(n)
        result["num_episodes"] = int(self.num_episodes)
        return result

    # ----- internals
    def _combine_moments(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        """Chan et al.: fold (n, mean, M2) of another set into this accumulator's moments."""
        if n == 0:
            return
        total = self.num_frames + n
        delta = mean - self._mean
        self._mean = self._mean + delta * (n / total)
        self._m2 = self._m2 + m2 + np.square(delta) * (self.num_frames * n / total)
        self.num_frames = total

    def _to_sketch(self) -> None:
        hist = _Histogram.empty(self._min, self._max, self.bins)
        for chunk in self._chunks or ():
            hist.add(chunk.astype(np.float64))
        self._hist, self._chunks = hist, None


class _Histogram:
    """Counts per dimension on the aligned grid ``[i * 2**e, (i + 1) * 2**e)``, bins ``lo .. lo + B - 1``."""

    def __init__(self, exponent: np.ndarray, lo: np.ndarray, counts: np.ndarray, vmin: np.ndarray,
                 vmax: np.ndarray):
        self.exponent = exponent  # int64 [D]
        self.lo = lo  # int64 [D]: bin number of column 0
        self.counts = counts  # int64 [D, B]
        self.vmin, self.vmax = vmin, vmax  # float64 [D]: the range the grid was chosen for

    @classmethod
    def empty(cls, vmin: np.ndarray, vmax: np.ndarray, bins: int) -> _Histogram:
        exponent = np.array([_exponent(a, b, bins) for a, b in zip(vmin, vmax, strict=True)], np.int64)
        lo = np.array([_bin_of(a, e) for a, e in zip(vmin, exponent, strict=True)], np.int64)
        counts = np.zeros((len(vmin), bins), np.int64)
        return cls(exponent, lo, counts, vmin.copy(), vmax.copy())

    @property
    def bins(self) -> int:
        return self.counts.shape[1]

    def grown(self, vmin: np.ndarray, vmax: np.ndarray) -> _Histogram:
        """This histogram on the grid of a range that contains its own (itself when the grid is unchanged)."""
        if np.array_equal(vmin, self.vmin) and np.array_equal(vmax, self.vmax):
            return self
        out = _Histogram.empty(vmin, vmax, self.bins)
        out.add_histogram(self)
        return out

    def add(self, x: np.ndarray) -> None:
        """Count float64 values ``x [n, D]``, all inside this histogram's range."""
        dims = x.shape[1]
        scale = np.array([math.ldexp(1.0, -int(e)) for e in self.exponent])  # exact powers of two
        column = np.floor(x * scale).astype(np.int64) - self.lo  # exact: |x * scale| <= 2**53
        flat = (column + np.arange(dims, dtype=np.int64) * self.bins).reshape(-1)
        self.counts += np.bincount(flat, minlength=dims * self.bins).reshape(dims, self.bins)

    def add_histogram(self, other: _Histogram) -> None:
        """Add another histogram whose grid is at most as fine and whose range is inside this one's."""
        for d in range(self.counts.shape[0]):
            shift = int(self.exponent[d] - other.exponent[d])
            if shift < 0:
                raise AssertionError("cannot add a finer histogram onto a coarser grid")
            nonzero = np.flatnonzero(other.counts[d])
            numbers = other.lo[d] + nonzero  # bin numbers on the other grid
            column = (numbers >> min(shift, 63)) - self.lo[d]  # arithmetic shift = floor division by 2**shift
            np.add.at(self.counts[d], column, other.counts[d, nonzero])

    def quantile(self, q: float, n: int) -> np.ndarray:
        """numpy's linear quantile estimated per dimension from the counts (float64 [D])."""
        position = q * (n - 1)
        k = int(math.floor(position))
        frac = position - k
        out = np.empty(self.counts.shape[0], np.float64)
        for d in range(self.counts.shape[0]):
            low = self._order_statistic(d, k)
            high = self._order_statistic(d, min(k + 1, n - 1))
            out[d] = low + frac * (high - low)
        return out

    def _order_statistic(self, d: int, k: int) -> float:
        counts = self.counts[d]
        cumulative = np.cumsum(counts)
        column = int(np.searchsorted(cumulative, k, side="right"))  # first bin holding more than k values
        before = int(cumulative[column] - counts[column])
        inside = (k - before + 0.5) / int(counts[column])
        value = math.ldexp(float(self.lo[d] + column) + inside, int(self.exponent[d]))
        return min(max(value, float(self.vmin[d])), float(self.vmax[d]))


def _bin_of(x: float, exponent: int) -> int:
    return math.floor(math.ldexp(float(x), -int(exponent)))


def _exponent(vmin: float, vmax: float, bins: int) -> int:
    """Smallest e >= a floor such that [vmin, vmax] spans at most ``bins`` bins of width 2**e.

    The floor keeps |x| / 2**e <= 2**53 (bin numbers exact in float64 and int64): finer bins than float64
    resolution are pointless. Monotone in the range, so a larger range never gets a finer grid.
    """
    magnitude = max(abs(vmin), abs(vmax))
    floor = max(_E_MIN, math.frexp(magnitude)[1] - 53) if magnitude > 0 else _E_MIN

    def fits(e: int) -> bool:
        return _bin_of(vmax, e) - _bin_of(vmin, e) <= bins - 1

    span = vmax - vmin
    e = max(floor, math.frexp(span / (bins - 1))[1]) if span > 0 else floor
    while not fits(e):
        e += 1
    while e - 1 >= floor and fits(e - 1):
        e -= 1
    return e


# ---------------------------------------------------------------------------------------------- json
def stats_to_json(stats: Mapping[str, Any]) -> dict[str, Any]:
    """Statistics dict -> JSON-ready dict: arrays become lists of floats (float32 values are exact in JSON),
    integers stay integers; other JSON values pass through."""
    out: dict[str, Any] = {}
    for key, value in stats.items():
        if isinstance(value, np.ndarray):
            out[key] = value.tolist()
        elif isinstance(value, np.integer):
            out[key] = int(value)
        elif isinstance(value, np.floating):
            out[key] = float(value)
        else:
            out[key] = value
    return out


def stats_from_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`stats_to_json`: lists -> float32 arrays, integers stay integers.

    Raises ConfigError when a statistic of ``STAT_KEYS`` is not a flat list of numbers, or when they have
    different lengths.
    """
    out: dict[str, Any] = {}
    lengths = {}
    for key, value in data.items():
        if isinstance(value, list):
            try:
                array = np.asarray(value, dtype=np.float32)
            except (TypeError, ValueError):
                raise ConfigError(f"statistic {key!r} is not a list of numbers") from None
            if array.ndim != 1:
                raise ConfigError(f"statistic {key!r} must be a flat list, got shape {array.shape}")
            out[key] = array
            if key in STAT_KEYS:
                lengths[key] = array.shape[0]
        elif key in STAT_KEYS:
            raise ConfigError(f"statistic {key!r} must be a list of numbers, got {type(value).__name__}")
        else:
            out[key] = value
    if len(set(lengths.values())) > 1:
        raise ConfigError(f"statistics have different lengths: {lengths}")
    return out


# ------------------------------------------------------------------------------------------- pooling
def pool_statistics(
    stats: Sequence[Mapping[str, Any]], weights: Sequence[float] | None = None
) -> dict[str, Any]:
    """Statistics of several datasets -> the statistics of their pooled frames.

    Each dataset i counts with probability ``p_i``: ``num_frames_i / sum(num_frames)`` by default (the
    union of all frames), or ``weights_i / sum(weights)`` (e.g. mixture weights: the statistics of the
    training stream). ``num_frames`` and ``num_episodes`` add up in both cases.

    - mean and std are exact for that mixture: ``mean = sum p_i mean_i``,
      ``var = sum p_i (std_i**2 + (mean_i - mean)**2)``.
    - min / max are the elementwise min / max of the datasets with ``p_i > 0``.
    - q01 / q99 are approximated from the datasets' own q01, q99, min and max: near its quantile q_i each
      dataset's CDF is modelled as linear, with a density estimated from the average densities on both
      sides of the quantile (see ``_pooled_quantile``), 0 below its min and 1 from its max on, and the
      quantile of the p-weighted mixture of these models is solved for. The result always lies between the
      smallest and the largest q_i, as the true pooled quantile does. Overlapping, similar datasets get
      about the density-weighted average of their quantiles; a dataset whose range lies wholly on one side
      contributes 0 or 1, so datasets with disjoint ranges get the quantile inside the right one (a plain
      average would fall between them). One dataset pooled alone keeps its quantiles. It is not a bound;
      for exact pooled quantiles, merge the datasets' ``StatsAccumulator`` objects instead.
    """
    stats = list(stats)
    if not stats:
        raise ConfigError("pool_statistics needs at least one statistics dict")
    for i, s in enumerate(stats):
        missing = [k for k in (*STAT_KEYS, "num_frames") if k not in s]
        if missing:
            raise ConfigError(f"statistics {i} lack {missing}")
    arrays = [{k: np.asarray(s[k], np.float64) for k in STAT_KEYS} for s in stats]
    dims = {a["mean"].shape for a in arrays}
    if len(dims) != 1 or any(a[k].shape != a["mean"].shape for a in arrays for k in STAT_KEYS):
        raise ConfigError(f"statistics have different dimensions: {sorted(d for d in dims)}")
    frames = np.array([int(s["num_frames"]) for s in stats], np.float64)
    raw = frames if weights is None else np.asarray(weights, np.float64)
    if raw.shape != frames.shape or not np.all(np.isfinite(raw)) or np.any(raw < 0) or raw.sum() <= 0:
        raise ConfigError(
            f"pool weights must be {len(stats)} finite numbers >= 0 with a positive sum, got "
            f"{list(raw) if weights is None else list(weights)}"
        )
    use = [i for i in range(len(stats)) if raw[i] > 0]
    p = raw[use] / raw[use].sum()
    chosen = [arrays[i] for i in use]
    pairs = list(zip(p, chosen, strict=True))
    mean = sum(pi * a["mean"] for pi, a in pairs)
    var = sum(pi * (np.square(a["std"]) + np.square(a["mean"] - mean)) for pi, a in pairs)
    vmin = np.min([a["min"] for a in chosen], axis=0)
    vmax = np.max([a["max"] for a in chosen], axis=0)
    result: dict[str, Any] = {"mean": mean, "std": np.sqrt(var), "min": vmin, "max": vmax}
    for key in QUANTILES:
        result[key] = np.clip(_pooled_quantile(key, p, chosen), vmin, vmax)
    result = {k: np.asarray(v, np.float32) for k, v in result.items()}
    result["num_frames"] = int(sum(int(s["num_frames"]) for s in stats))
    result["num_episodes"] = int(sum(int(s.get("num_episodes", 0)) for s in stats))
    return result


def _pooled_quantile(key: str, p: np.ndarray, arrays: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
    """The x (float64 [D]) where the p-weighted mixture of the local CDF models reaches QUANTILES[key].

    Model of dataset i near its quantile q_i (level L): ``F_i(x) = 0`` below its min, 1 from its max on,
    else ``clip(L + s_i * (x - q_i), 0, 1)``. The slope s_i estimates the density at q_i as the geometric
    mean of the average densities on its two sides, the bulk ``0.98 / (q99_i - q01_i)`` and the tail
    ``0.01 / (q01_i - min_i)`` (or ``0.01 / (max_i - q99_i)``): the first overestimates a tail's density,
    the second underestimates it (a step at q_i when q99_i == q01_i). Every model F_i is <= L left of q_i
    and >= L from q_i on, like the true CDF, so the answer lies in [min_i q_i, max_i q_i]; it is found
    there by bisection (F is monotone).
    """
    level = QUANTILES[key]
    q = np.stack([a[key] for a in arrays])  # [K, D]
    vmin = np.stack([a["min"] for a in arrays])
    vmax = np.stack([a["max"] for a in arrays])
    width = np.stack([a["q99"] - a["q01"] for a in arrays])
    tail = (q - vmin) if level < 0.5 else (vmax - q)  # the tail on the quantile's side
    step = width <= 0
    bulk = (QUANTILES["q99"] - QUANTILES["q01"]) / np.where(step, 1.0, width)
    # geometric mean of the densities on both sides of the knot; the bulk's alone when the tail is empty
    slope = np.where(tail > 0, np.sqrt(bulk * min(level, 1 - level) / np.where(tail > 0, tail, 1.0)), bulk)
    weight = p[:, None]

    def mixture(x: np.ndarray) -> np.ndarray:  # x [D] -> F(x) [D]
        linear = np.where(step, np.where(x >= q, 1.0, 0.0), np.clip(level + slope * (x - q), 0.0, 1.0))
        model = np.where(x < vmin, 0.0, np.where(x >= vmax, 1.0, linear))
        return (weight * model).sum(axis=0)

    lo, hi = q.min(axis=0), q.max(axis=0)
    done = mixture(lo) >= level  # already reached at the lowest candidate
    for _ in range(200):  # halves [lo, hi) until float64 cannot split it further
        mid = lo + (hi - lo) / 2
        if np.all(done | (mid <= lo) | (mid >= hi)):
            break
        reached = mixture(mid) >= level
        hi = np.where(reached & ~done, mid, hi)
        lo = np.where(~reached & ~done, mid, lo)
    return np.where(done, lo, hi)
