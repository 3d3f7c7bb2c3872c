"""One pass over a dataset's episodes: the frames its filters keep, and statistics of its state and actions.

Filters run here, when the sample space is built, never at read time, so the stream stays a pure function of
(config, position). Statistics are computed over the kept frames, after `standardize`. Both are cached
together (see cache.py) under a fingerprint of the data, the keys, the filters and the standardize source.
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlds_loader import cache, filters
from rlds_loader.config import DatasetConfig, short_hash
from rlds_loader.episodes import EpisodeSource, ResolvedKeys
from rlds_loader.errors import ConfigError
from rlds_loader.index import FrameIndex
from rlds_loader.statistics import StatsAccumulator, stats_from_json, stats_to_json
from rlds_loader.transforms.actions import concat_episode_fields

log = logging.getLogger(__name__)
PASS_FORMAT = 1


@dataclass(frozen=True)
class PassResult:
    segments: tuple[np.ndarray, np.ndarray, np.ndarray]  # (episode, start, length) kept
    statistics: dict[str, Any]  # {"state": stats, "action": stats, "num_frames", "num_episodes"}
    unknown_range_keys: tuple[str, ...] = ()  # keep_ranges entries that matched no episode


def _nest(flat: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        if path.startswith(prefix):
            node = out
            parts = path[len(prefix):].split("/")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
    return out


def _selected_masks(frames: FrameIndex) -> dict[int, np.ndarray]:
    """Episode -> bool mask of its steps that `frames`' segments select (episodes with no selected step
    are absent)."""
    out: dict[int, np.ndarray] = {}
    for e, a, n in zip(frames.seg_episode.tolist(), frames.seg_start.tolist(), frames.seg_length.tolist(),
                       strict=True):
        if n > 0:
            mask = out.setdefault(e, np.zeros(int(frames.num_steps[e]), bool))
            mask[a:a + n] = True
    return out


def _episode_key(meta_flat: Mapping[str, Any], key: str | Callable[[dict], str]) -> str:
    if callable(key):
        return str(key(_nest(meta_flat, "episode_metadata/")))
    path = key if key.startswith("episode_metadata/") else f"episode_metadata/{key}"
    if path not in meta_flat:
        raise ConfigError(f"keep_ranges_key {key!r} is not an episode_metadata field; there are: "
                          f"{', '.join(sorted(meta_flat)) or '(none)'}")
    return str(meta_flat[path])


def run_pass(src: EpisodeSource, dcfg: DatasetConfig, resolved: ResolvedKeys, action_horizon: int,
             num_threads: int | None = None) -> PassResult:
    """Read every episode once: keep masks from the filters, then statistics over the kept frames.

    The filters narrow the frames `src.frames` already selects (its segments: the episode-level choices made
    before the pass, such as min_episode_length and the validation hash split); an episode it leaves out
    entirely is not read."""
    frames = src.frames
    selected = _selected_masks(frames)
    ranges = filters.load_keep_ranges(dcfg.keep_ranges) if dcfg.keep_ranges is not None else None
    state_dim: list[int] = []

    def one(e: int):
        if e not in selected:  # nothing to keep or count (e.g. excluded as corrupt or by the hash split)
            return None
        ep = src.episode(e)
        T = int(frames.num_steps[e])
        keep = selected[e] & (T >= dcfg.min_episode_length)
        meta = {k: v for k, v in ep.items() if k.startswith("episode_metadata/")}
        key = None
        if dcfg.episode_filter is not None and keep.any():
            keep[:] = bool(dcfg.episode_filter(_nest(meta, "episode_metadata/")))
        if ranges is not None:
            key = _episode_key(meta, dcfg.keep_ranges_key)
            mask = np.zeros(T, bool)
            for a, b in ranges.get(key, ()):
                mask[max(a, 0):min(b, T)] = True
            keep &= mask
        actions = concat_episode_fields([np.asarray(ep[p]) for p in resolved.actions])
        if dcfg.filter_idle_actions is not None:
            keep &= ~filters.idle_frames(actions, action_horizon, dcfg.filter_idle_actions, None)
        if dcfg.skip_unlabeled and resolved.language:
            labelled = np.zeros(T, bool)
            for p in resolved.language:
                texts = ep[p] if isinstance(ep[p], list) else [ep[p]] * T
                labelled |= np.array([bool(str(s).strip()) for s in texts], bool)
            keep &= labelled
        state = (concat_episode_fields([np.asarray(ep[p]) for p in resolved.state], num_steps=T)
                 if resolved.state else np.zeros((T, 0), np.float32))
        if not state_dim:
            state_dim.append(state.shape[1])
        return keep, state[keep], actions[keep], key

    workers = max(1, min(num_threads or os.cpu_count() or 1, 8))
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, range(frames.num_episodes)))
    empty = [e for e, r in enumerate(results) if r is None]
    results = [r for r in results if r is not None]
    episode_ids = np.delete(np.arange(frames.num_episodes), empty)

    seg_e, seg_s, seg_l = [], [], []
    state_acc = action_acc = None
    for e, (keep, state, actions, _) in zip(episode_ids.tolist(), results, strict=True):
        starts, lengths = filters.segments_from_mask(keep)
        seg_e.append(np.full(len(starts), e, np.int64))
        seg_s.append(np.asarray(starts, np.int64))
        seg_l.append(np.asarray(lengths, np.int64))
        if state_acc is None:
            state_acc, action_acc = StatsAccumulator(state.shape[1]), StatsAccumulator(actions.shape[1])
        if len(actions):
            for what, acc, values, keys in (("state", state_acc, state, resolved.state),
                                            ("action", action_acc, actions, resolved.actions)):
                try:
                    acc.update(values)
                except ValueError as err:  # NaN or infinity: say where
                    path, offset = frames.location(src.ds, e)
                    raise ConfigError(f"dataset {dcfg.name!r}: the {what} keys {keys} of episode {e} ({path} at "
                                      f"byte offset {offset}): {err}; statistics (and normalization) need finite "
                                      "values") from err
            state_acc.add_episode()
            action_acc.add_episode()
    unknown = sorted(set(ranges) - {key for *_, key in results}) if ranges is not None else []
    num_frames = int(sum(len(a) for _, _, a, _ in results))
    # No frame left (filters removed every one): no statistics; the loader refuses such a dataset unless its
    # weight is 0.
    stats = {"state": state_acc.finalize() if state_acc and num_frames else None,
             "action": action_acc.finalize() if action_acc and num_frames else None}
    stats["num_frames"] = num_frames
    stats["num_episodes"] = int(sum(1 for k, *_ in results if k.any()))
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64))  # noqa: E731
    return PassResult((cat(seg_e), cat(seg_s), cat(seg_l)), stats, tuple(unknown))


def _warn_unknown(dcfg: DatasetConfig, unknown: Sequence[str]) -> None:
    if unknown:
        msg = (f"dataset {dcfg.name!r}: keep_ranges names {len(unknown)} episode(s) that are not in split "
               f"{dcfg.split!r}: {', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}")
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)


def pass_fingerprint(frames: FrameIndex, data_fp: Any, dcfg: DatasetConfig, resolved: ResolvedKeys,
                     action_horizon: int) -> str:
    selection = short_hash([frames.seg_episode.tolist(), frames.seg_start.tolist(), frames.seg_length.tolist()])
    return short_hash({"format": PASS_FORMAT, "data": data_fp, "selection": selection, "filters": dcfg.filter_spec(),
                       "numeric": dcfg.numeric_spec(), "keys": [resolved.state, resolved.actions,
                                                                list(resolved.language)],
                       "horizon": action_horizon if dcfg.filter_idle_actions is not None else None}, 16)


def cached_pass(src: EpisodeSource, dcfg: DatasetConfig, resolved: ResolvedKeys, action_horizon: int,
                data_fp: Any, *, force: bool = False, cache_dir: str | None = None) -> PassResult:
    """`run_pass`, loaded from the cache when its fingerprint matches (and not forced)."""
    fp = pass_fingerprint(src.frames, data_fp, dcfg, resolved, action_horizon)
    name = f"pass-{fp}.npz"
    raw = None if force else cache.load(src.ds, name, cache_dir)
    if raw is not None:
        try:
            with np.load(io.BytesIO(raw)) as z:
                stats = json.loads(bytes(z["stats"]).decode())
                unknown = tuple(stats.pop("unknown_range_keys", ()))
                stats = {k: (stats_from_json(v) if isinstance(v, dict) else v) for k, v in stats.items()}
                _warn_unknown(dcfg, unknown)
                return PassResult((z["episode"], z["start"], z["length"]), stats, unknown)
        except Exception as e:  # a damaged cache entry is recomputed
            log.warning("recomputing dataset pass for %s: cached file unreadable (%s)", dcfg.name, e)
    result = run_pass(src, dcfg, resolved, action_horizon)
    _warn_unknown(dcfg, result.unknown_range_keys)
    stats_json = {**statistics_json(result.statistics), "unknown_range_keys": list(result.unknown_range_keys)}
    buf = io.BytesIO()
    np.savez(buf, episode=result.segments[0], start=result.segments[1], length=result.segments[2],
             stats=np.frombuffer(json.dumps(stats_json).encode(), np.uint8))
    cache.store(src.ds, name, buf.getvalue(), cache_dir)
    return result


def statistics_json(stats: Mapping[str, Any]) -> dict[str, Any]:
    """Statistics as plain JSON-able lists (for saving next to a model checkpoint)."""
    return {k: (stats_to_json(v) if isinstance(v, dict) else v) for k, v in stats.items()}


__all__: Sequence[str] = ["PassResult", "run_pass", "cached_pass", "statistics_json"]
