"""Guess a DatasetConfig from a dataset's features, for the demo and benchmarks on a user's data.

Cameras: the step images that have 3 channels (up to three, in feature order). State: the per-step float
tensors under the observation that are not images (`state` alone when the dataset has one). Actions:
`steps/action` (every leaf when it is a dict). Language: the first per-step or episode text whose name
contains "instruction" or "language". A real training run should name its keys explicitly.
"""

from __future__ import annotations

from rlds_loader.config import DatasetConfig
from rlds_loader.errors import ConfigError
from rlds_loader.tfds.reader import open_dataset


def guess_dataset_config(data_dir: str, name: str, version: str | None = None) -> DatasetConfig:
    ds = open_dataset(data_dir, name, version)
    leaves = ds.features.describe()
    obs = "steps/observation/"
    cameras = [p for p, kind, shape, _ in leaves
               if p.startswith(obs) and kind == "Image" and shape is not None and shape[-1] == 3][:3]
    floats = [p for p, kind, _, dtype in leaves
              if p.startswith(obs) and kind in ("Tensor", "Scalar") and str(dtype).startswith("float")]
    state = [p for p in floats if p == obs + "state"] or floats
    actions = [p for p, _, _, _ in leaves if p == "steps/action" or p.startswith("steps/action/")]
    if not actions:
        raise ConfigError(f"dataset {name!r} has no steps/action feature; name action_keys explicitly")
    texts = [p for p, kind, _, _ in leaves if kind == "Text" and ("instruction" in p or "language" in p)]
    return DatasetConfig(
        name=name, data_dir=data_dir, version=version,
        image_keys={p.rsplit("/", 1)[-1]: p for p in cameras}, state_keys=tuple(state),
        action_keys=tuple(actions), language_key=texts[0] if texts else None)
