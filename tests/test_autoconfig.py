"""guess_dataset_config: the keys it picks on layouts other than DROID's (nested cameras sharing a name, a
state dict next to other float tensors, text inside the action dict, `actions` instead of `action`)."""

from __future__ import annotations

import numpy as np
import pytest

import rlds_loader as rl
from rlds_loader.autoconfig import guess_dataset_config
from rlds_loader.tfds import features as F
from rlds_loader.tfds.writer import write_dataset


def _write(root: str, name: str, step_features: dict, step: dict) -> None:
    feats = F.FeaturesDict({"steps": F.Dataset(step_features)})
    write_dataset(root, name, feats, {"train": [{"steps": [step] * 3}]})


def test_guess_on_nested_cameras_a_state_dict_and_text_in_the_action(tmp_path):
    img = F.Image(shape=(4, 4, 3), encoding_format="png")
    _write(str(tmp_path), "odd", {
        "observation": {"left": {"rgb": img}, "right": {"rgb": img}, "wrist": img,
                        "state": {"joints": F.Tensor(shape=(3,), dtype=np.float32), "gripper": F.Scalar(np.float32)},
                        "depth": F.Tensor(shape=(4, 4), dtype=np.float32),
                        "velocity": F.Tensor(shape=(3,), dtype=np.float32)},
        "action": {"arm": F.Tensor(shape=(3,), dtype=np.float32), "gripper": F.Scalar(np.float32),
                   "note": F.Text()},
        "language_instruction": F.Text(),
    }, {"observation": {"left": {"rgb": np.zeros((4, 4, 3), np.uint8)}, "right": {"rgb": np.ones((4, 4, 3), np.uint8)},
                        "wrist": np.zeros((4, 4, 3), np.uint8),
                        "state": {"joints": np.zeros(3, np.float32), "gripper": np.float32(0)},
                        "depth": np.zeros((4, 4), np.float32), "velocity": np.zeros(3, np.float32)},
        "action": {"arm": np.zeros(3, np.float32), "gripper": np.float32(1), "note": "go"},
        "language_instruction": "pick"})
    cfg = guess_dataset_config(str(tmp_path), "odd")
    assert cfg.image_keys == {"left_rgb": "steps/observation/left/rgb", "right_rgb": "steps/observation/right/rgb",
                              "wrist": "steps/observation/wrist"}
    assert sorted(cfg.state_keys) == ["steps/observation/state/gripper", "steps/observation/state/joints"]
    assert sorted(cfg.action_keys) == ["steps/action/arm", "steps/action/gripper"]
    assert cfg.language_key == "steps/language_instruction"
    batch = next(iter(rl.create_data_loader(rl.LoaderConfig(datasets=[cfg], batch_size=2, image_size=(4, 4)), 0, 1)))
    assert batch["state"].shape == (2, 4) and batch["actions"].shape[-1] == 4


def test_guess_takes_actions_and_names_the_features_when_there_is_no_action(tmp_path):
    _write(str(tmp_path), "plural", {"actions": F.Tensor(shape=(2,), dtype=np.float32)},
           {"actions": np.zeros(2, np.float32)})
    assert guess_dataset_config(str(tmp_path), "plural").action_keys == ("steps/actions",)
    _write(str(tmp_path), "none", {"command": F.Tensor(shape=(2,), dtype=np.float32)},
           {"command": np.zeros(2, np.float32)})
    with pytest.raises(rl.ConfigError, match=r"no numeric steps/action feature.*the step features are: steps/command"):
        guess_dataset_config(str(tmp_path), "none")
