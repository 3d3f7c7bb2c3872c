"""The user-facing configuration: what to read (DatasetConfig) and how to serve it (LoaderConfig).

Both are frozen dataclasses. `stream_fingerprint` hashes exactly the fields that define the sample stream,
so a checkpoint can refuse a loader whose stream would differ; fields that only change speed or memory
(workers, prefetch, cache folder, storage credentials) are left out, so they can change across a restart.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlds_loader.errors import ConfigError


@dataclass(frozen=True)
class DatasetConfig:
    """One RLDS dataset of a mixture and the keys that map it onto the batch schema.

    Keys are looked up under `steps/observation/`, then `steps/`, then `episode_metadata/` (for text), unless
    given as a full flat path (`steps/...`, `episode_metadata/...`); "a/b" paths reach nested dicts.
    An `image_keys` value of None makes a padding camera (zeros, `image_mask` False); a list of keys makes
    the loader pick one per frame (seeded by the position), as does a list of `language_key`s.

    Transforms and filters (all optional):
    - `standardize(episode) -> episode`: a function on the decoded episode (nested dict of numpy, images
      still encoded) for what a key mapping cannot say; keys are then resolved on its output.
    - `normalization`: None, "normal", "bounds" or "bounds_q99" for state and actions, with statistics of this
      dataset (cached); `action_normalization_mask` (True = normalize) leaves e.g. a gripper untouched.
    - `min_episode_length`, `episode_filter(metadata) -> bool`, `keep_ranges` (openpi's JSON of
      `{episode_key: [[start, end], ...]}`, a path or a dict) with `keep_ranges_key` (metadata path, or a
      function of the metadata, giving an episode's key), `filter_idle_actions` (threshold: drop frames whose
      action chunk is all below it in absolute value), `skip_unlabeled` (drop frames with an empty
      instruction). Filters run when the index is built, so the sample space stays fixed.

    Corrupt data (corrupt.py): `on_corrupt="raise"` (default) stops at the first bad record; "skip" excludes
    bad episode records (CRC, unparseable Example, and with `verify_images=True` undecodable images) when
    the index is built, deterministically, and lists them in the index and a CorruptDataWarning. Neither
    field is in the stream fingerprint: what is excluded changes the data fingerprint instead.
    """

    name: str
    data_dir: str
    version: str | None = None
    split: str = "train"
    weight: float = 1.0
    image_keys: Mapping[str, str | Sequence[str] | None] = field(default_factory=dict)
    state_keys: Sequence[str] = ()
    action_keys: Sequence[str] = ("action",)
    language_key: str | Sequence[str] | None = "language_instruction"
    text_keys: Mapping[str, str] = field(default_factory=dict)
    standardize: Callable[[dict], dict] | None = None
    normalization: str | None = None
    action_normalization_mask: Sequence[bool] | None = None
    min_episode_length: int = 1
    episode_filter: Callable[[dict], bool] | None = None
    keep_ranges: str | Mapping[str, Any] | None = None
    keep_ranges_key: str | Callable[[dict], str] = "episode_metadata/file_path"
    filter_idle_actions: float | None = None
    skip_unlabeled: bool = False
    val_split: str | None = None
    storage_options: Mapping[str, Any] | None = None
    on_corrupt: str = "raise"
    verify_images: bool = False

    def __post_init__(self) -> None:
        # Normalise containers so configs compare, hash and fingerprint the same however they were given.
        object.__setattr__(self, "image_keys", {
            cam: (k if k is None or isinstance(k, str) else tuple(k)) for cam, k in (self.image_keys or {}).items()})
        if self.language_key is not None and not isinstance(self.language_key, str):
            object.__setattr__(self, "language_key", tuple(self.language_key))
        if self.action_normalization_mask is not None:
            mask = tuple(bool(v) for v in self.action_normalization_mask)
            object.__setattr__(self, "action_normalization_mask", mask)
        if self.normalization not in (None, "normal", "bounds", "bounds_q99"):
            raise ConfigError(f"dataset {self.name!r}: normalization {self.normalization!r} is not one of "
                              "None, 'normal', 'bounds', 'bounds_q99'")
        object.__setattr__(self, "text_keys", dict(self.text_keys or {}))
        for name in ("state_keys", "action_keys"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value or ()))
        if not self.name:
            raise ConfigError("DatasetConfig.name is empty")
        if not (self.weight >= 0):
            raise ConfigError(f"dataset {self.name!r}: weight must be >= 0, got {self.weight}")
        if self.on_corrupt not in ("raise", "skip"):
            raise ConfigError(f"dataset {self.name!r}: on_corrupt must be 'raise' or 'skip', "
                              f"got {self.on_corrupt!r}")

    def stream_spec(self) -> dict[str, Any]:
        """The fields that define which samples this dataset contributes (functions by their source)."""
        return {
            "name": self.name, "version": self.version, "split": self.split, "weight": float(self.weight),
            "image_keys": dict(sorted(self.image_keys.items())), "state_keys": list(self.state_keys),
            "action_keys": list(self.action_keys), "language_key": self.language_key,
            "text_keys": dict(sorted(self.text_keys.items())), "val_split": self.val_split,
            **self.filter_spec(), **self.numeric_spec(),
        }

    def numeric_spec(self) -> dict[str, Any]:
        """What defines this dataset's state/action values and their normalization."""
        return {"standardize": function_source(self.standardize), "normalization": self.normalization,
                "action_normalization_mask": self.action_normalization_mask}

    def filter_spec(self) -> dict[str, Any]:
        """What defines which frames survive the filters."""
        ranges = self.keep_ranges if isinstance(self.keep_ranges, (str, type(None))) else short_hash(self.keep_ranges)
        return {"min_episode_length": self.min_episode_length, "episode_filter": function_source(self.episode_filter),
                "keep_ranges": ranges, "keep_ranges_key": (self.keep_ranges_key if isinstance(self.keep_ranges_key, str)
                                                           else function_source(self.keep_ranges_key)),
                "filter_idle_actions": self.filter_idle_actions, "skip_unlabeled": self.skip_unlabeled}

    def needs_scan(self) -> bool:
        """True when building the sample space or the statistics needs the episodes' values."""
        return bool(self.episode_filter or self.keep_ranges is not None or self.filter_idle_actions is not None
                    or self.skip_unlabeled)


@dataclass(frozen=True)
class LoaderConfig:
    """How the datasets become batches. `batch_size` is the GLOBAL batch size (all hosts together)."""

    datasets: Sequence[DatasetConfig]
    batch_size: int = 256
    action_horizon: int = 10
    image_size: tuple[int, int] | None = (224, 224)
    # False: frames in dataset order, one pass = every frame once (a mixture interleaves its datasets in
    # proportion to their frame counts; weights then only say which datasets take part: weight 0 does not).
    shuffle: bool = True
    seed: int = 0
    num_batches: int | None = None
    max_samples: int | None = None
    window_size: int = 1
    goal_relabeling: str | None = None
    max_state_dim: int | None = None
    max_action_dim: int | None = None
    resize_mode: str = "stretch"
    image_augment: Mapping[str, Any] | None = None
    image_dropout: Mapping[str, float] | None = None
    pooled_statistics: bool = False
    balance_weights: bool = False
    val_fraction: float | None = None
    mixture: str | None = None
    data_dir: str | None = None
    force_recompute_statistics: bool = False
    # Performance only: not part of the stream, free to change across a restart.
    num_workers: int | None = None  # threads
    num_processes: int = 0  # Grain worker processes (0: threads only)
    prefetch_batches: int = 2
    # Caps the batches read ahead so that (read ahead + one being used) x batch size stays within it.
    ram_budget_mb: float | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "datasets", tuple(self.datasets))
        if self.mixture is not None:
            object.__setattr__(self, "datasets", tuple(expand_mixture(self.mixture, self.data_dir, self.datasets)))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        if not self.datasets:
            raise ConfigError("LoaderConfig.datasets is empty")
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ConfigError(f"dataset names must be unique in a mixture, got {names}")
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")
        if self.action_horizon <= 0:
            raise ConfigError(f"action_horizon must be positive, got {self.action_horizon}")
        if sum(d.weight for d in self.datasets) <= 0:
            raise ConfigError("the datasets' weights sum to 0")
        if self.max_samples is not None and self.max_samples <= 0:
            raise ConfigError(f"max_samples must be positive, got {self.max_samples}")
        if self.num_batches is not None and self.num_batches < 0:
            raise ConfigError(f"num_batches must be >= 0, got {self.num_batches}")
        if self.window_size < 1:
            raise ConfigError(f"window_size must be >= 1, got {self.window_size}")
        if self.goal_relabeling not in (None, "uniform"):
            raise ConfigError(f"goal_relabeling must be None or 'uniform', got {self.goal_relabeling!r}")
        if self.resize_mode not in ("stretch", "pad"):
            raise ConfigError(f"resize_mode must be 'stretch' or 'pad', got {self.resize_mode!r}")
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.prefetch_batches < 1:
            raise ConfigError(f"prefetch_batches must be >= 1, got {self.prefetch_batches}")
        if self.ram_budget_mb is not None and not self.ram_budget_mb > 0:
            raise ConfigError(f"ram_budget_mb must be positive, got {self.ram_budget_mb}")

    def replace(self, **changes: Any) -> LoaderConfig:
        return dataclasses.replace(self, **changes)

    def stream_parts(self) -> dict[str, Any]:
        """The stream-defining fields, grouped so a mismatch can say which group differs."""
        return {
            "datasets": [d.stream_spec() for d in self.datasets],
            "sampling": {"shuffle": bool(self.shuffle), "seed": int(self.seed), "max_samples": self.max_samples,
                         "balance_weights": self.balance_weights, "val_fraction": self.val_fraction},
            "transforms": {"action_horizon": int(self.action_horizon),
                           "image_size": list(self.image_size) if self.image_size else None,
                           "window_size": self.window_size, "goal_relabeling": self.goal_relabeling,
                           "max_state_dim": self.max_state_dim, "max_action_dim": self.max_action_dim,
                           "resize_mode": self.resize_mode, "image_augment": self.image_augment,
                           "image_dropout": self.image_dropout, "pooled_statistics": self.pooled_statistics},
        }


def short_hash(obj: Any, n: int = 12) -> str:
    """Stable hex digest of a JSON-able object (sorted keys), `n` hex characters."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(data, digest_size=16).hexdigest()[:n]


def function_source(fn: Callable | None) -> str | None:
    """A user function (standardize, episode_filter, ...) -> text for fingerprints: its source, plus the
    values it captures (closure cells, defaults, a functools.partial's arguments, a callable object's or
    bound method's attributes), so that two functions computing different things fingerprint differently
    and the same function gives the same text in every process (`_stable_repr`: no memory address).

    Captured values are taken as they are when the text is made: a function that fills a memo or sets an
    attribute as it runs changes its text, so the loader makes its fingerprint before running any of them
    (a restarted process then computes the same); a loader rebuilt in one process after such a function ran
    gets another fingerprint and refuses the first one's state (loudly, rather than risk a wrong stream)."""
    if fn is None:
        return None
    if isinstance(fn, functools.partial):
        return (f"partial({function_source(fn.func)}, args={_stable_repr(fn.args)}, "
                f"keywords={_values(fn.keywords)})")
    if not inspect.isfunction(fn) and not inspect.ismethod(fn) and callable(fn) and not inspect.isbuiltin(fn):
        # a callable object: its class's source and its attributes; objects without attributes (operator's
        # itemgetter, attrgetter, ...) by their repr when it holds no address
        state = getattr(fn, "__dict__", None)
        described = _values(state) if state is not None else _address_free_repr(fn)
        return f"{_source_text(type(fn))} state={described}"
    text = _source_text(fn)
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None) or ()
    if code is not None and cells:
        captured = {}
        for name, cell in zip(code.co_freevars, cells, strict=False):
            try:
                captured[name] = cell.cell_contents
            except ValueError:  # an empty cell
                captured[name] = None
        text += f" closure={_values(captured)}"
    defaults = (getattr(fn, "__defaults__", None), getattr(fn, "__kwdefaults__", None))
    if any(defaults):
        text += f" defaults={_stable_repr(defaults[0])} {_values(defaults[1] or {})}"
    if inspect.ismethod(fn):  # a bound method: the attributes of its object too
        text += f" self={_values(getattr(fn.__self__, '__dict__', {}))}"
    return text


def _source_text(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _values(named: Mapping[str, Any]) -> str:
    """{name: value} (captured variables, attributes, keyword arguments) -> stable text, by name."""
    return "{" + ", ".join(f"{k}={_stable_repr(v)}" for k, v in sorted(named.items(), key=lambda kv: str(kv[0]))) + "}"


def _address_free_repr(value: Any) -> str:
    text = repr(value)
    return f"<{type(value).__qualname__}>" if " at 0x" in text else text


def _stable_repr(value: Any, depth: int = 0) -> str:
    """Data by value (numbers, strings, containers, numpy arrays by content); functions by their source; other
    objects by type (their repr may hold a memory address)."""
    if depth > 6:
        return "..."
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return repr(value)
    if isinstance(value, Mapping):
        items = sorted((_stable_repr(k, depth + 1), _stable_repr(v, depth + 1)) for k, v in value.items())
        return f"{type(value).__name__}{{{', '.join(f'{k}: {v}' for k, v in items)}}}"
    if isinstance(value, list | tuple | set | frozenset):
        items = [_stable_repr(v, depth + 1) for v in value]
        unordered = isinstance(value, set | frozenset)
        return f"{type(value).__name__}({', '.join(sorted(items) if unordered else items)})"
    if isinstance(value, np.ndarray | np.generic):
        arr = np.asarray(value)
        return f"ndarray({arr.dtype}, {arr.shape}, {hashlib.blake2b(arr.tobytes(), digest_size=8).hexdigest()})"
    if callable(value) and not isinstance(value, type):
        return f"fn({_source_text(value)})"  # not function_source: a closure may capture itself
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def expand_mixture(name: str, data_dir: str | None, templates: Sequence[DatasetConfig]) -> list[DatasetConfig]:
    """A registered mixture -> DatasetConfigs: each (dataset, weight) entry takes its keys from the template of
    the same name in `templates` (data_dir filled in when the template has none), else guesses them."""
    from rlds_loader import mixtures

    by_name = {t.name: t for t in templates}
    out = []
    for dataset, weight in mixtures.get(name):
        template = by_name.get(dataset)
        if template is None:
            if data_dir is None:
                raise ConfigError(f"mixture {name!r}: dataset {dataset!r} has no template and no data_dir is set")
            from rlds_loader.autoconfig import guess_dataset_config

            template = guess_dataset_config(data_dir, dataset)
        out.append(dataclasses.replace(template, data_dir=template.data_dir or data_dir or "", weight=float(weight)))
    return out
