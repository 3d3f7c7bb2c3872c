"""Named dataset mixtures: a registry of ``[(dataset name, weight), ...]`` lists, and Octo's weight balancing.

No mixture is built in: published mixtures (e.g. Octo's OXE "magic soup") change between releases, and a
wrong weight silently changes a training run, so users register the ones they use::

    mixtures.register("my_soup", [("bridge_dataset", 1.0), ("fractal20220817_data", 0.5)])
    weights = mixtures.balance([w for _, w in mixtures.get("my_soup")], frame_counts)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rlds_loader.errors import ConfigError

__all__ = ["balance", "get", "names", "register"]

_REGISTRY: dict[str, tuple[tuple[str, float], ...]] = {}


def register(name: str, entries: Sequence[tuple[str, float]], *, overwrite: bool = False) -> None:
    """Register mixture ``name`` as ``[(dataset name, weight >= 0), ...]``.

    Registering the same entries again is a no-op; different entries under an existing name need
    ``overwrite=True``. Raises ConfigError for an empty name or list, a duplicate dataset, or a weight that
    is not a finite number >= 0 (at least one must be positive).
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"mixture name must be a non-empty string, got {name!r}")
    parsed = _check_entries(name, entries)
    if name in _REGISTRY and _REGISTRY[name] != parsed and not overwrite:
        raise ConfigError(f"mixture {name!r} is already registered with other entries; pass overwrite=True")
    _REGISTRY[name] = parsed


def get(name: str) -> list[tuple[str, float]]:
    """The entries of mixture ``name`` (a new list). Raises ConfigError listing the registered names."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown mixture {name!r}; registered mixtures: {names() or 'none'}")
    return list(_REGISTRY[name])


def names() -> list[str]:
    """The registered mixture names, sorted."""
    return sorted(_REGISTRY)


def balance(weights: Sequence[float], frame_counts: Sequence[int]) -> list[float]:
    """Mixture weights -> sampling probabilities ``w_i * n_i / sum_j(w_j * n_j)`` (Octo's balance_weights).

    With equal weights every frame is then equally likely, whatever dataset it belongs to. Raises
    ConfigError for different lengths, negative or non-finite values, or an all-zero product.
    """
    if len(weights) != len(frame_counts):
        raise ConfigError(f"{len(weights)} weights but {len(frame_counts)} frame counts")
    products = []
    for w, n in zip(weights, frame_counts, strict=True):
        w, n = float(w), float(n)
        if not (math.isfinite(w) and math.isfinite(n)) or w < 0 or n < 0:
            raise ConfigError(f"weights and frame counts must be finite and >= 0, got {list(weights)}, "
                              f"{list(frame_counts)}")
        products.append(w * n)
    total = math.fsum(products)
    if total <= 0:
        raise ConfigError(
            f"balanced weights are all zero: weights {list(weights)}, counts {list(frame_counts)}"
        )
    return [p / total for p in products]


def _check_entries(name: str, entries: Sequence[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    if isinstance(entries, str | bytes) or not isinstance(entries, Sequence) or not entries:
        raise ConfigError(f"mixture {name!r} needs a non-empty list of (dataset, weight) pairs")
    parsed = []
    for entry in entries:
        try:
            dataset, weight = entry
            weight = float(weight)
        except (TypeError, ValueError):
            raise ConfigError(f"mixture {name!r}: entry {entry!r} is not a (dataset, weight) pair") from None
        if not isinstance(dataset, str) or not dataset:
            raise ConfigError(f"mixture {name!r}: dataset names must be non-empty strings, got {dataset!r}")
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"mixture {name!r}: weight of {dataset!r} must be finite, >= 0, got {weight}")
        parsed.append((dataset, weight))
    datasets = [d for d, _ in parsed]
    duplicates = sorted({d for d in datasets if datasets.count(d) > 1})
    if duplicates:
        raise ConfigError(f"mixture {name!r} lists datasets more than once: {duplicates}")
    if not any(w > 0 for _, w in parsed):
        raise ConfigError(f"mixture {name!r} needs at least one positive weight")
    return tuple(parsed)
