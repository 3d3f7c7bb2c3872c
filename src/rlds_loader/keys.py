"""Map the short keys of a DatasetConfig onto the flat feature paths of one dataset.

Pure: takes the dataset's list of leaf feature paths (e.g. "steps/observation/wrist_image") and returns
paths, or raises ConfigError naming the key and listing the candidates there are. A key may be a full
flat path, a path relative to one of the role's prefixes, or name a dict, which expands to its leaves in
feature order (so `action_keys=("action",)` concatenates a nested action dict).
"""

from __future__ import annotations

from collections.abc import Sequence

from rlds_loader.errors import ConfigError

STEP_PREFIXES = ("steps/observation/", "steps/")
ACTION_PREFIXES = ("steps/", "steps/observation/")
TEXT_PREFIXES = ("steps/", "steps/observation/", "episode_metadata/", "")


def resolve(key: str, leaves: Sequence[str], prefixes: Sequence[str], *, role: str,
            dataset: str) -> list[str]:
    """Flat leaf paths that `key` names, trying the role's prefixes in order."""
    key = key.strip("/")
    candidates = [key] if key.startswith(("steps/", "episode_metadata/")) else [p + key for p in prefixes]
    for cand in candidates:
        if cand in leaves:
            return [cand]
        below = [leaf for leaf in leaves if leaf.startswith(cand + "/")]
        if below:
            return below
    shown = sorted(leaf for leaf in leaves if any(leaf.startswith(p) for p in prefixes if p))
    raise ConfigError(
        f"dataset {dataset!r}: {role} key {key!r} not found (tried {', '.join(candidates)}); "
        f"available: {', '.join(shown) if shown else '(none)'}")


def resolve_many(keys: Sequence[str], leaves: Sequence[str], prefixes: Sequence[str], *, role: str,
                 dataset: str) -> list[str]:
    out: list[str] = []
    for key in keys:
        out.extend(resolve(key, leaves, prefixes, role=role, dataset=dataset))
    return out
