"""rlds_loader: read RLDS datasets (TFDS on-disk layout) without TensorFlow, as a stateless sample stream
with exact, instant, few-hundred-byte checkpoints.

Public names are imported lazily, so `import rlds_loader.tfds` stays light (no Grain import).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "DatasetConfig": "rlds_loader.config",
    "LoaderConfig": "rlds_loader.config",
    "DataLoader": "rlds_loader.loader",
    "create_data_loader": "rlds_loader.loader",
    "RLDSError": "rlds_loader.errors",
    "ConfigError": "rlds_loader.errors",
    "CorruptRecordError": "rlds_loader.errors",
    "DatasetNotFoundError": "rlds_loader.errors",
    "FeatureKeyError": "rlds_loader.errors",
    "StateError": "rlds_loader.errors",
    "UnknownFeatureTypeError": "rlds_loader.errors",
    "SkipResumeLoader": "rlds_loader.skip_resume",
    "StorageReadError": "rlds_loader.tfds.retry",
    "CorruptDataWarning": "rlds_loader.corrupt",
}
# Submodules reachable as attributes (`rl.jax`, `rl.torch`, `rl.mixtures`) without importing them eagerly.
_SUBMODULES = {"jax", "torch", "mixtures", "sampling", "tfds"}

__all__ = sorted(_EXPORTS) + sorted(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"rlds_loader.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rlds_loader' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
