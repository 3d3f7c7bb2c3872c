"""Read one dataset's episodes whole and serve slices of their fields.

`EpisodeSource.episode(e)` reads episode e's record (one positional read), parses it, decodes the keys the
loader needs (all keys when a `standardize` function must see the whole episode), applies `standardize`,
and flattens the result to `{"steps/observation/image": ..., ...}`: numeric fields as arrays [T, ...], text as
lists of str, images still encoded (a frame is decoded only when a sample asks for it). A small LRU keeps
recent episodes, which makes unshuffled reading (consecutive frames of one episode) one read per episode.

`fetch(e, requests)` answers (key, start, stop) step-range requests from that cache; the partial-read path
(`step_reader.StepReader`) answers the same requests by reading only the bytes they need.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlds_loader import keys as keymod
from rlds_loader.config import DatasetConfig
from rlds_loader.errors import ConfigError, RLDSError
from rlds_loader.index import FrameIndex
from rlds_loader.tfds.example_proto import parse_example
from rlds_loader.tfds.reader import RecordRef
from rlds_loader.transforms.text import to_str

Request = tuple[str, int, int]  # (flat key, first step, stop step); episode-level keys use (key, 0, 1)


class StandardizeError(RLDSError):
    """A user's standardize function failed; names the dataset and episode."""


@dataclass(frozen=True)
class ResolvedKeys:
    """A DatasetConfig's keys as flat feature paths of one dataset; cameras and language may list
    candidates, one of which is picked per frame."""

    images: dict[str, tuple[str, ...] | None]
    state: list[str]
    actions: list[str]
    language: tuple[str, ...]
    texts: dict[str, str | None]

    def paths(self) -> list[str]:
        out = [p for ps in self.images.values() if ps for p in ps] + self.state + self.actions
        out += list(self.language) + [p for p in self.texts.values() if p]
        return list(dict.fromkeys(out))


def resolve_keys(cfg: DatasetConfig, leaves: Sequence[str]) -> ResolvedKeys:
    """DatasetConfig keys -> flat paths; unknown keys are a ConfigError listing what exists."""
    r = keymod.resolve

    def one(key: str, prefixes, role: str) -> str:
        return r(key, leaves, prefixes, role=role, dataset=cfg.name)[0]

    images = {}
    for cam, k in cfg.image_keys.items():
        cands = None if k is None else ((k,) if isinstance(k, str) else tuple(k))
        images[cam] = None if cands is None else tuple(one(c, keymod.STEP_PREFIXES, "image") for c in cands)
    state = keymod.resolve_many(cfg.state_keys, leaves, keymod.STEP_PREFIXES, role="state", dataset=cfg.name)
    actions = keymod.resolve_many(cfg.action_keys, leaves, keymod.ACTION_PREFIXES, role="action",
                                  dataset=cfg.name)
    lang = cfg.language_key
    language = () if lang is None else tuple(one(k, keymod.TEXT_PREFIXES, "language")
                                             for k in ((lang,) if isinstance(lang, str) else lang))
    texts = {name: one(k, keymod.TEXT_PREFIXES, "text") for name, k in cfg.text_keys.items()}
    if not actions:
        raise ConfigError(f"dataset {cfg.name!r}: action_keys is empty")
    return ResolvedKeys(images, state, actions, language, texts)


def check_cameras(name: str, resolved: ResolvedKeys, leaves: Sequence[Any]) -> None:
    """Every camera key must name one image per step: an Image feature (or a string tensor of encoded bytes,
    or raw uint8/uint16 pixels [H, W] / [H, W, 1..4]) directly in the steps. A Sequence of images per step,
    a Video or an episode-level image is a ConfigError naming the camera and what the key holds (otherwise
    the first batch would blame the data)."""
    by_path = {leaf.path: leaf for leaf in leaves}
    for cam, paths in resolved.images.items():
        for path in paths or ():
            leaf = by_path.get(path)
            if leaf is None:
                continue
            kind, outer, shape = leaf.feature.TYPE_NAME, len(leaf.outer), tuple(leaf.feature.shape)
            dtype = np.dtype(leaf.feature.dtype)
            tensor = kind in ("Tensor", "Scalar")
            image = (kind == "Image" or (tensor and dtype.kind in "OSU" and shape == ())
                     or (tensor and dtype in (np.uint8, np.uint16) and _pixel_shape(shape)))
            if path.startswith("steps/") and outer == 1 and image:
                continue
            holds = ("an episode-level feature" if outer == 0 else
                     "a sequence of images in each step" if image else
                     f"a {kind} of {dtype} {shape}, not an image")
            raise ConfigError(f"dataset {name!r}: camera {cam!r} -> {path!r} is {holds}; a camera key must name "
                              "one image per step (an Image feature in the steps, or raw uint8 pixels)")


def _pixel_shape(shape: tuple) -> bool:
    """Whether a tensor of this shape can be a frame of raw pixels: [H, W] or [H, W, 1..4]."""
    return len(shape) == 2 or (len(shape) == 3 and shape[2] is not None and 1 <= shape[2] <= 4)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested episode dict -> {"a/b/c": leaf}."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, path + "/"))
        else:
            out[path] = v
    return out


def stack_steps(value: np.ndarray) -> np.ndarray:
    """An object array of per-step values (how ragged features are read) -> one array [T, ...] when every
    step has the same shape; otherwise the object array unchanged (the caller says why it needs one shape)."""
    items = [np.asarray(v) for v in value]
    if items and all(v.dtype.kind != "O" and v.shape == items[0].shape for v in items):
        return np.stack(items)
    return value


def _as_steps(path: str, value: Any, num_steps: int) -> Any:
    """Normalize one flat field: per-step text -> list[str]; per-step arrays of one shape held in an object
    array (ragged features: dynamic-shape tensors, Sequences) -> one stacked array [T, ...]; episode-level
    values kept as they are."""
    if path.startswith("steps/"):
        if isinstance(value, np.ndarray) and value.dtype.kind in "SU":
            return [to_str(v) for v in value]
        if isinstance(value, np.ndarray) and value.dtype.kind == "O":
            if len(value) and all(isinstance(v, str | bytes) for v in value):
                return [to_str(v) for v in value]
            return stack_steps(value)
        if isinstance(value, list) and value and isinstance(value[0], (str, bytes)):
            return [to_str(v) for v in value]
        return value
    if isinstance(value, (str, bytes)):
        return to_str(value)
    return value


class EpisodeSource:
    """Episodes of one dataset (one sliced split) by episode number in its FrameIndex, whole and cached."""

    def __init__(self, ds: Any, frames: FrameIndex, name: str, paths: Sequence[str] | None = None,
                 standardize: Callable[[dict], dict] | None = None, cache_episodes: int = 8):
        self.ds = ds
        self.frames = frames
        self.name = name
        self.standardize = standardize
        # With a standardize function, decode every key: it may read any of them.
        self.paths = None if standardize is not None or paths is None else list(paths)
        self.cache_episodes = cache_episodes
        self._init_cache()

    def _init_cache(self) -> None:
        self._cache: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # picklable for process workers: drop the cache and lock
        state = self.__dict__.copy()
        state.pop("_cache", None)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_cache()

    def with_frames(self, frames: FrameIndex) -> EpisodeSource:
        return EpisodeSource(self.ds, frames, self.name, self.paths, self.standardize, self.cache_episodes)

    def record_location(self, e: int) -> tuple[str, RecordRef, str]:
        f = self.frames
        split = f.splits[int(f.split_id[e])]
        ref = RecordRef(int(f.shard[e]), int(f.offset[e]), int(f.length[e]))
        return split, ref, self.ds.shard_paths(split)[ref.shard]

    def tree(self, e: int) -> dict[str, Any]:
        """Episode e decoded (only the needed keys unless standardizing), standardized, nested."""
        split, ref, shard_path = self.record_location(e)
        flat = parse_example(self.ds.read_record(split, ref), path=shard_path, offset=ref.offset)
        tree = self.ds.features.decode_example(flat, keys=self.paths)
        if self.standardize is not None:
            try:
                tree = self.standardize(tree)
            except Exception as exc:
                raise StandardizeError(f"dataset {self.name!r}: standardize failed on episode {e} "
                                       f"({shard_path} at byte offset {ref.offset}): "
                                       f"{type(exc).__name__}: {exc}") from exc
            if not isinstance(tree, Mapping):
                raise StandardizeError(f"dataset {self.name!r}: standardize returned {type(tree).__name__} "
                                       f"for episode {e}, not a dict")
        return tree

    def episode(self, e: int) -> dict[str, Any]:
        """Flat fields of episode e (cached)."""
        with self._lock:
            hit = self._cache.get(e)
            if hit is not None:
                self._cache.move_to_end(e)
                return hit
        T = int(self.frames.num_steps[e])
        prepared = {p: _as_steps(p, v, T) for p, v in flatten(self.tree(e)).items()}
        for p, v in prepared.items():
            if p.startswith("steps/") and hasattr(v, "__len__") and len(v) != T:
                raise StandardizeError(f"dataset {self.name!r}: episode {e} field {p} has {len(v)} steps, "
                                       f"the index says {T} (standardize must keep the number of steps)")
        with self._lock:
            self._cache[e] = prepared
            while len(self._cache) > self.cache_episodes:
                self._cache.popitem(last=False)
        return prepared

    def fetch_many(self, items: Sequence[tuple[int, Sequence[Request]]]) -> list[list[Any]]:
        return [self.fetch(e, reqs) for e, reqs in items]

    def fetch(self, e: int, requests: Sequence[Request]) -> list[Any]:
        """Answer step-range requests on episode e: images -> list of encoded bytes, numeric -> array
        [stop-start, ...], text -> list of str; episode-level keys -> the value."""
        ep = self.episode(e)
        out = []
        for key, start, stop in requests:
            value = ep[key]
            if not key.startswith("steps/"):
                out.append(value)
            elif hasattr(value, "raw"):
                out.append([value.raw(i) for i in range(start, stop)])
            else:
                out.append(value[start:stop])
        return out
