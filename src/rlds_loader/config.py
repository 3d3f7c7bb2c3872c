"""The user-facing configuration: what to read (DatasetConfig) and how to serve it (LoaderConfig).

Both are frozen dataclasses. `stream_fingerprint` hashes exactly the fields that define the sample stream,
so a checkpoint can refuse a loader whose stream would differ; fields that only change speed or memory
(workers, prefetch, cache folder, storage credentials) are left out, so they can change across a restart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlds_loader.errors import ConfigError


@dataclass(frozen=True)
class DatasetConfig:
    """One RLDS dataset of a mixture and the keys that map it onto the batch schema.

    Keys are looked up under `steps/observation/`, then `steps/`, then `episode_metadata/` (for text), unless
    given as a full flat path (`steps/...`, `episode_metadata/...`); "a/b" paths reach nested dicts.
    An `image_keys` value of None makes a padding camera (zeros, `image_mask` False).
    """

    name: str
    data_dir: str
    version: str | None = None
    split: str = "train"
    weight: float = 1.0
    image_keys: Mapping[str, str | None] = field(default_factory=dict)
    state_keys: Sequence[str] = ()
    action_keys: Sequence[str] = ("action",)
    language_key: str | None = "language_instruction"
    text_keys: Mapping[str, str] = field(default_factory=dict)
    storage_options: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        # Normalise containers so configs compare, hash and fingerprint the same however they were given.
        object.__setattr__(self, "image_keys", dict(self.image_keys or {}))
        object.__setattr__(self, "text_keys", dict(self.text_keys or {}))
        for name in ("state_keys", "action_keys"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value or ()))
        if not self.name:
            raise ConfigError("DatasetConfig.name is empty")
        if not (self.weight >= 0):
            raise ConfigError(f"dataset {self.name!r}: weight must be >= 0, got {self.weight}")

    def stream_spec(self) -> dict[str, Any]:
        """The fields that define which samples this dataset contributes."""
        return {
            "name": self.name, "version": self.version, "split": self.split, "weight": float(self.weight),
            "image_keys": dict(sorted(self.image_keys.items())), "state_keys": list(self.state_keys),
            "action_keys": list(self.action_keys), "language_key": self.language_key,
            "text_keys": dict(sorted(self.text_keys.items())),
        }


@dataclass(frozen=True)
class LoaderConfig:
    """How the datasets become batches. `batch_size` is the GLOBAL batch size (all hosts together)."""

    datasets: Sequence[DatasetConfig]
    batch_size: int = 256
    action_horizon: int = 10
    image_size: tuple[int, int] | None = (224, 224)
    shuffle: bool = True
    seed: int = 0
    num_batches: int | None = None
    max_samples: int | None = None
    # Performance only: not part of the stream, free to change across a restart.
    num_workers: int | None = None
    prefetch_batches: int = 2
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "datasets", tuple(self.datasets))
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

    def replace(self, **changes: Any) -> LoaderConfig:
        return dataclasses.replace(self, **changes)

    def stream_parts(self) -> dict[str, Any]:
        """The stream-defining fields, grouped so a mismatch can say which group differs."""
        return {
            "datasets": [d.stream_spec() for d in self.datasets],
            "sampling": {"shuffle": bool(self.shuffle), "seed": int(self.seed),
                         "max_samples": self.max_samples},
            "transforms": {"action_horizon": int(self.action_horizon),
                           "image_size": list(self.image_size) if self.image_size else None},
        }


def short_hash(obj: Any, n: int = 12) -> str:
    """Stable hex digest of a JSON-able object (sorted keys), `n` hex characters."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(data, digest_size=16).hexdigest()[:n]
