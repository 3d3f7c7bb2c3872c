"""Read one dataset's episodes and prepare the fields a sample needs.

`EpisodeSource.episode(e)` reads episode e's record (one positional read), parses it, decodes only the
resolved keys and returns a `PreparedEpisode`: state and actions as float32 [T, D], text as lists of str,
images still encoded (a frame is decoded only when a sample asks for it). A small LRU keeps recently used
episodes, which makes unshuffled reading (consecutive frames of one episode) a single read per episode.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlds_loader import keys as keymod
from rlds_loader.config import DatasetConfig
from rlds_loader.errors import ConfigError
from rlds_loader.index import FrameIndex
from rlds_loader.tfds.example_proto import parse_example
from rlds_loader.tfds.reader import RecordRef
from rlds_loader.transforms.actions import concat_episode_fields
from rlds_loader.transforms.text import to_str


@dataclass(frozen=True)
class ResolvedKeys:
    """A DatasetConfig's keys as flat feature paths of one dataset."""

    images: dict[str, str | None]
    state: list[str]
    actions: list[str]
    language: str | None
    texts: dict[str, str | None]

    def paths(self) -> list[str]:
        out = [p for p in self.images.values() if p] + self.state + self.actions
        out += [p for p in (self.language, *self.texts.values()) if p]
        return list(dict.fromkeys(out))


def resolve_keys(cfg: DatasetConfig, leaves: list[str], all_text_names: Mapping[str, Any] = ()) -> ResolvedKeys:
    """DatasetConfig keys -> flat paths; unknown keys are a ConfigError listing what exists."""
    r = keymod.resolve
    images = {cam: (r(k, leaves, keymod.STEP_PREFIXES, role="image", dataset=cfg.name)[0] if k else None)
              for cam, k in cfg.image_keys.items()}
    state = keymod.resolve_many(cfg.state_keys, leaves, keymod.STEP_PREFIXES, role="state", dataset=cfg.name)
    actions = keymod.resolve_many(cfg.action_keys, leaves, keymod.ACTION_PREFIXES, role="action",
                                  dataset=cfg.name)
    language = (r(cfg.language_key, leaves, keymod.TEXT_PREFIXES, role="language", dataset=cfg.name)[0]
                if cfg.language_key else None)
    texts = {name: r(k, leaves, keymod.TEXT_PREFIXES, role="text", dataset=cfg.name)[0]
             for name, k in cfg.text_keys.items()}
    if not actions:
        raise ConfigError(f"dataset {cfg.name!r}: action_keys is empty")
    return ResolvedKeys(images, state, actions, language, texts)


@dataclass
class PreparedEpisode:
    num_steps: int
    images: dict[str, Any]  # camera -> EncodedImages (per step) or None for a padding camera
    state: np.ndarray  # float32 [T, S]
    actions: np.ndarray  # float32 [T, A]
    prompt: list[str]
    texts: dict[str, list[str]] = field(default_factory=dict)


def _get(tree: Mapping[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("/"):
        node = node[part]
    return node


def _text_per_step(value: Any, num_steps: int) -> list[str]:
    if isinstance(value, (str, bytes)):
        return [to_str(value)] * num_steps
    values = [to_str(v) for v in value]
    if len(values) != num_steps:
        raise ValueError(f"text field has {len(values)} entries for {num_steps} steps")
    return values


class EpisodeSource:
    """Prepared episodes of one dataset (one sliced split), by episode number in its FrameIndex."""

    def __init__(self, ds: Any, frames: FrameIndex, resolved: ResolvedKeys, cache_episodes: int = 8):
        self.ds = ds
        self.frames = frames
        self.resolved = resolved
        self.cache_episodes = cache_episodes
        self._paths = resolved.paths()
        self._init_cache()

    def _init_cache(self) -> None:
        self._cache: OrderedDict[int, PreparedEpisode] = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # picklable for process workers: drop the cache and lock
        state = self.__dict__.copy()
        state.pop("_cache", None)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_cache()

    def read_raw(self, e: int) -> bytes:
        f = self.frames
        split = f.splits[int(f.split_id[e])]
        return self.ds.read_record(split, RecordRef(int(f.shard[e]), int(f.offset[e]), int(f.length[e])))

    def episode(self, e: int) -> PreparedEpisode:
        with self._lock:
            hit = self._cache.get(e)
            if hit is not None:
                self._cache.move_to_end(e)
                return hit
        prepared = self._prepare(e)
        with self._lock:
            self._cache[e] = prepared
            while len(self._cache) > self.cache_episodes:
                self._cache.popitem(last=False)
        return prepared

    def _prepare(self, e: int) -> PreparedEpisode:
        f = self.frames
        split = f.splits[int(f.split_id[e])]
        shard_path = self.ds.shard_paths(split)[int(f.shard[e])]
        flat = parse_example(self.read_raw(e), path=shard_path, offset=int(f.offset[e]))
        tree = self.ds.features.decode_example(flat, keys=self._paths)
        T = int(f.num_steps[e])
        r = self.resolved
        images = {cam: (_get(tree, p) if p else None) for cam, p in r.images.items()}
        state = (concat_episode_fields([np.asarray(_get(tree, p)) for p in r.state]) if r.state
                 else np.zeros((T, 0), np.float32))
        actions = concat_episode_fields([np.asarray(_get(tree, p)) for p in r.actions])
        prompt = _text_per_step(_get(tree, r.language), T) if r.language else [""] * T
        texts = {name: (_text_per_step(_get(tree, p), T) if p else [""] * T) for name, p in r.texts.items()}
        return PreparedEpisode(T, images, state, actions, prompt, texts)
