"""Frame and episode filters, as pure functions the index applies when it is built.

Filtering at index time keeps the sample space fixed and random-access: a filter only decides which
(episode, step) pairs exist; sampling then draws among them by position. Everything here maps arrays to
arrays (no I/O except reading a keep-ranges file in ``load_keep_ranges``).

- ``keep_min_length``: episodes with at least ``min_length`` steps.
- ``load_keep_ranges`` / ``segments_from_keep_ranges``: openpi's DROID "keep ranges" (frames to train on,
  per episode key) -> kept step segments.
- ``idle_frames``: frames whose action chunk does not move (Octo's zero-action filter; openpi's
  "no motion relative to the chunk's first action" with ``relative=True``).
- ``segments_from_mask``: runs of kept frames -> (starts, lengths).

Segments are half-open: ``(start, length)`` covers steps ``start .. start + length - 1``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlds_loader.errors import ConfigError

__all__ = [
    "idle_frames",
    "keep_min_length",
    "load_keep_ranges",
    "segments_from_keep_ranges",
    "segments_from_mask",
]


def keep_min_length(num_steps: np.ndarray, min_length: int) -> np.ndarray:
    """Steps per episode ``[E]`` -> bool ``[E]``: True for episodes of at least ``min_length`` steps."""
    if int(min_length) != min_length or min_length < 0:
        raise ConfigError(f"min_length must be a non-negative integer, got {min_length!r}")
    return np.asarray(num_steps, dtype=np.int64) >= int(min_length)


def load_keep_ranges(path_or_dict: str | os.PathLike | Mapping[str, Any],
                     storage_options: Mapping[str, Any] | None = None) -> dict[str, list[tuple[int, int]]]:
    """openpi's DROID keep-ranges JSON (path, URL or parsed dict) -> ``{episode_key: [(start, end), ...]}``.

    Two layouts are accepted:

    - the plain map ``{episode_key: [[start, end], ...]}``;
    - the file openpi's ``compute_droid_nonidle_ranges.py`` writes:
      ``{"metadata": {"filter_last_n_in_ranges": n}, "keep_ranges": {episode_key: [[start, end], ...]}}``,
      where the last ``n`` frames of each range are dropped too, as openpi's loader does
      (``range(start, end - n)``).

    Ranges are half-open step ranges (``end`` exclusive) and are returned as written (sorted, not merged or
    clipped: ``segments_from_keep_ranges`` does that), minus the ranges the trimming left empty. openpi keys
    DROID episodes by ``f"{recording_folderpath}--{file_path}"`` (both from ``episode_metadata``).

    Raises ConfigError naming the episode key of the first malformed entry (not a list of [start, end]
    integer pairs with 0 <= start <= end), or for a malformed file.
    """
    data = path_or_dict if isinstance(path_or_dict, Mapping) else _read_json(path_or_dict, storage_options)
    trim = 0
    if "keep_ranges" in data and isinstance(data["keep_ranges"], Mapping):
        unknown = sorted(set(data) - {"keep_ranges", "metadata"})
        if unknown:
            raise ConfigError(f"keep-ranges file has unexpected top-level keys {unknown}")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise ConfigError(f"keep-ranges 'metadata' must be a mapping, got {type(metadata).__name__}")
        trim = metadata.get("filter_last_n_in_ranges", 0)
        if not _is_int(trim) or trim < 0:
            raise ConfigError(f"keep-ranges filter_last_n_in_ranges must be an integer >= 0, got {trim!r}")
        data = data["keep_ranges"]
    out: dict[str, list[tuple[int, int]]] = {}
    for key, ranges in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"keep-ranges episode keys must be strings, got {key!r}")
        if isinstance(ranges, str | bytes) or not isinstance(ranges, Sequence):
            raise ConfigError(f"keep-ranges entry {key!r} must list [start, end] pairs, got {ranges!r:.80}")
        parsed = []
        for pair in ranges:
            if (isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2
                    or not all(_is_int(v) for v in pair)):
                raise ConfigError(f"keep-ranges entry {key!r} has {pair!r}: expected [start, end] integers")
            start, end = int(pair[0]), int(pair[1])
            if not 0 <= start <= end:
                raise ConfigError(f"keep-ranges entry {key!r} has [{start}, {end}]: need 0 <= start <= end")
            if end - trim > start:
                parsed.append((start, end - trim))
        out[key] = sorted(parsed)
    return out


def segments_from_keep_ranges(
    episode_keys: Sequence[str],
    num_steps: np.ndarray,
    ranges: Mapping[str, Sequence[tuple[int, int]]],
    *,
    missing: str = "drop",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Episodes (key and step count each) and keep ranges -> the kept step segments, and unmatched keys.

    Returns ``(episode, start, length, unmatched)``: int64 arrays, one entry per segment, sorted by episode
    then start; ``unmatched`` lists (sorted) the range keys that name no episode, for the caller to warn or
    fail about. Each episode's ranges are clipped to ``[0, num_steps)`` and overlapping or touching ranges
    are merged; empty segments are left out. An episode whose key has no entry is dropped
    (``missing="drop"``) or kept whole (``missing="keep"``); a key listed with no ranges drops its episode.
    Several episodes with the same key all get that key's ranges.
    """
    if missing not in ("drop", "keep"):
        raise ConfigError(f"missing must be 'drop' or 'keep', got {missing!r}")
    steps = np.asarray(num_steps, dtype=np.int64)
    if steps.shape != (len(episode_keys),):
        raise ConfigError(f"{len(episode_keys)} episode keys but num_steps has shape {steps.shape}")
    episodes, starts, lengths = [], [], []
    seen = set()
    for e, key in enumerate(episode_keys):
        n = int(steps[e])
        if key in ranges:
            seen.add(key)
            merged = _merge(ranges[key], n)
        else:
            merged = [(0, n)] if missing == "keep" and n > 0 else []
        for start, end in merged:
            episodes.append(e)
            starts.append(start)
            lengths.append(end - start)
    unmatched = sorted(set(ranges) - seen)
    as_array = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
    return as_array(episodes), as_array(starts), as_array(lengths), unmatched


def idle_frames(
    actions: np.ndarray,
    horizon: int,
    threshold: float,
    dims: slice | Sequence[int] | None = None,
    *,
    relative: bool = False,
) -> np.ndarray:
    """Actions ``[T, A]`` of one episode -> bool ``[T]``: True where frame t's action chunk is idle.

    The chunk of frame t is ``actions[min(t + i, T - 1)]`` for ``i < horizon`` (the last action repeats past
    the end, as in ``action_chunk``), restricted to the action dimensions ``dims`` (None: all).

    - ``relative=False`` (Octo's zero-action filter): idle when every ``|a|`` in the chunk is
      ``< threshold``.
    - ``relative=True`` (openpi's DROID idle filter for absolute joint-position actions, which keeps a frame
      when some ``|chunk[i] - chunk[0]| > 1e-3`` over the first half of the chunk): idle when every
      ``|a_{t+i} - a_t|`` is ``<= threshold``. openpi's setting is ``horizon = chunk_size // 2``,
      ``threshold = 1e-3``.

    1-D ``actions`` count as ``[T, 1]``. Raises ConfigError for horizon < 1 or a negative threshold.
    """
    a = np.asarray(actions)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ConfigError(f"idle_frames expects actions [T, A], got shape {a.shape}")
    if int(horizon) != horizon or horizon < 1:
        raise ConfigError(f"horizon must be a positive integer, got {horizon!r}")
    if not threshold >= 0:
        raise ConfigError(f"threshold must be >= 0, got {threshold!r}")
    if dims is not None:
        a = a[:, dims]
    a = a.astype(np.float64)
    num_steps = a.shape[0]
    if num_steps == 0:
        return np.zeros(0, bool)
    if relative:
        idle = np.ones(num_steps, bool)
        for i in range(1, min(int(horizon), num_steps)):
            later = a[np.minimum(np.arange(num_steps) + i, num_steps - 1)]
            idle &= (np.abs(later - a) <= threshold).all(axis=1)
        return idle
    moving = ~(np.abs(a) < threshold).all(axis=1)  # per step: some |a| >= threshold
    # frame t is idle when no step of [t, min(t + horizon, T)) moves: a windowed count of moving steps
    count = np.concatenate([[0], np.cumsum(moving, dtype=np.int64)])
    t = np.arange(num_steps)
    end = np.minimum(t + int(horizon), num_steps)
    return (count[end] - count[t]) == 0


def segments_from_mask(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bool ``[T]`` -> ``(starts, lengths)`` int64: the maximal runs of True, in order."""
    mask = np.asarray(keep)
    if mask.ndim != 1 or mask.dtype != np.bool_:
        raise ConfigError(f"segments_from_mask expects a 1-D bool array, got {mask.dtype} {mask.shape}")
    edges = np.diff(np.concatenate([[0], mask.view(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return starts.astype(np.int64), (ends - starts).astype(np.int64)


def _merge(ranges: Sequence[tuple[int, int]], num_steps: int) -> list[tuple[int, int]]:
    """Clip half-open ranges to [0, num_steps), drop empty ones, merge overlapping or touching ones."""
    clipped = sorted((max(0, int(s)), min(num_steps, int(e))) for s, e in ranges)
    merged: list[tuple[int, int]] = []
    for start, end in clipped:
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _read_json(path: str | os.PathLike, storage_options: Mapping[str, Any] | None) -> Mapping[str, Any]:
    from rlds_loader.tfds.storage import filesystem

    fs, inner = filesystem(os.fspath(path), **dict(storage_options or {}))
    try:
        raw = fs.cat_file(inner)
    except FileNotFoundError:
        raise ConfigError(f"keep-ranges file {os.fspath(path)!r} does not exist") from None
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"keep-ranges file {os.fspath(path)!r} is not valid JSON: {e}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"keep-ranges file {os.fspath(path)!r} must hold a JSON object")
    return data
