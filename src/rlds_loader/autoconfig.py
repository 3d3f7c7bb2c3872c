"""Guess a DatasetConfig from a dataset's features, for the demo and benchmarks on a user's data.

Cameras: the step images that have 3 channels (up to three, in feature order), named by their path under
the observation ("left/rgb" -> "left_rgb" when two share a last name). State: the per-step float tensors
under the observation that are not images (`state` alone, or the leaves of a `state` dict, when the dataset
has one), without 2-D-or-more tensors (depth maps, point clouds). Actions: `steps/action` (its numeric
leaves when it is a dict), else `steps/actions`. Language: the first per-step or episode text whose name
contains "instruction" or "language". A real training run should name its keys explicitly.
"""

from __future__ import annotations

from rlds_loader.config import DatasetConfig
from rlds_loader.errors import ConfigError
from rlds_loader.tfds.reader import open_dataset

_NUMERIC = ("float", "int", "uint", "bool")


def guess_dataset_config(data_dir: str, name: str, version: str | None = None) -> DatasetConfig:
    ds = open_dataset(data_dir, name, version)
    leaves = ds.features.describe()
    obs = "steps/observation/"
    cameras = [p for p, kind, shape, _ in leaves
               if p.startswith(obs) and kind == "Image" and shape is not None and shape[-1] == 3][:3]
    floats = [p for p, kind, shape, dtype in leaves
              if p.startswith(obs) and kind in ("Tensor", "Scalar") and str(dtype).startswith("float")
              and len(shape or ()) <= 2]  # [T] or [T, D] per step: not images or point clouds
    state = ([p for p in floats if p == obs + "state"] or [p for p in floats if p.startswith(obs + "state/")]
             or floats)
    numeric = [(p, kind) for p, kind, _, dtype in leaves
               if kind in ("Tensor", "Scalar", "ClassLabel") and str(dtype).startswith(_NUMERIC)]
    actions = []
    for root in ("steps/action", "steps/actions"):
        actions = [p for p, _ in numeric if p == root or p.startswith(root + "/")]
        if actions:
            break
    if not actions:
        steps = sorted(p for p, *_ in leaves if p.startswith("steps/"))
        raise ConfigError(f"dataset {name!r} has no numeric steps/action feature; name action_keys explicitly "
                          f"(the step features are: {', '.join(steps) or '(none)'})")
    texts = [p for p, kind, _, _ in leaves if kind == "Text" and ("instruction" in p or "language" in p)]
    return DatasetConfig(
        name=name, data_dir=data_dir, version=version, image_keys=_camera_names(cameras, obs),
        state_keys=tuple(state), action_keys=tuple(actions), language_key=texts[0] if texts else None)


def _camera_names(paths: list[str], obs: str) -> dict[str, str]:
    """Camera name -> path: the last path part, or the path under the observation joined with "_" when two
    cameras share a last part (".../left/rgb", ".../right/rgb")."""
    last = [p.rsplit("/", 1)[-1] for p in paths]
    return {(n if last.count(n) == 1 else p[len(obs):].replace("/", "_")): p for n, p in zip(last, paths, strict=True)}
