"""Loader keys on features that are not one fixed-size tensor per step, in a dataset written by TFDS:
dynamic-shape and Sequence features as state keys (read when every step has one size, a clear error naming
the key otherwise) and camera keys that do not name one image per step (refused when the loader is built)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from tfds_builders import write_with_tfds

import rlds_loader as rl
from rlds_loader.tfds.reader import open_dataset

NAME = "ragged_keys"
EPISODES = 4
STEPS = 5


def _v(e: int, t: int) -> np.ndarray:
    """Dynamic-shape state with 3 values in every step."""
    return np.arange(3, dtype=np.float32) + 10 * e + t


def _u(e: int, t: int) -> np.ndarray:
    """Dynamic-shape field with 3 values per step, except in episode 3 which has 4 (one size per episode)."""
    return np.zeros(3 + (e == 3), np.float32) + t


def _w(e: int, t: int) -> np.ndarray:
    """Dynamic-shape field whose size changes from step to step."""
    return np.full(2 + t % 2, e + 0.5 * t, np.float32)


def _pairs(e: int, t: int) -> list[np.ndarray]:
    """A Sequence of two (2,) tensors per step: a [2, 2] block once stacked."""
    return [np.array([e, t], np.float32), np.array([-e, 100 + t], np.float32)]


def _image(e: int, t: int) -> np.ndarray:
    y, x = np.mgrid[0:8, 0:8]
    return np.stack([20 * e + t + 0 * x, 16 * x, 16 * y], axis=-1).astype(np.uint8)


def _depth(e: int, t: int) -> np.ndarray:
    y, x = np.mgrid[0:8, 0:8]
    return (1000 * e + 7000 * x + 900 * y + t).astype(np.uint16)


def _episode(e: int) -> dict:
    steps = [{"observation": {"v": _v(e, t), "u": _u(e, t), "w": _w(e, t), "pairs": _pairs(e, t),
                              "image": _image(e, t), "cams": [_image(e, t)] * 2, "raw": _image(e, t),
                              "raw_depth": _depth(e, t), "depth": _depth(e, t)[:, :, None]},
              "action": np.array([e, t], np.float32)} for t in range(STEPS)]
    return {"steps": steps, "episode_metadata": {"goal": _image(e, STEPS), "id": e}}


@pytest.fixture(scope="module")
def ragged_dir(tmp_path_factory) -> str:
    import tensorflow_datasets as tfds

    F = tfds.features
    root = str(tmp_path_factory.mktemp("ragged"))
    features = lambda: F.FeaturesDict({  # noqa: E731
        "steps": F.Dataset({
            "observation": F.FeaturesDict({
                "v": F.Tensor(shape=(None,), dtype=np.float32, encoding="zlib"),
                "u": F.Tensor(shape=(None,), dtype=np.float32, encoding="zlib"),
                "w": F.Tensor(shape=(None,), dtype=np.float32, encoding="zlib"),
                "pairs": F.Sequence(F.Tensor(shape=(2,), dtype=np.float32)),
                "image": F.Image(shape=(8, 8, 3), encoding_format="png"),
                "cams": F.Sequence(F.Image(shape=(8, 8, 3), encoding_format="png")),
                "raw": F.Tensor(shape=(8, 8, 3), dtype=np.uint8),
                "raw_depth": F.Tensor(shape=(8, 8), dtype=np.uint16, encoding="zlib"),
                "depth": F.Image(shape=(8, 8, 1), dtype=np.uint16, encoding_format="png"),
            }),
            "action": F.Tensor(shape=(2,), dtype=np.float32),
        }),
        "episode_metadata": F.FeaturesDict({"goal": F.Image(shape=(8, 8, 3), encoding_format="png"),
                                            "id": F.Scalar(dtype=np.int64)}),
    })
    write_with_tfds(root, NAME, features, lambda: (_episode(e) for e in range(EPISODES)))
    return root


def _config(root: str, split: str = "train", standardize=None, **keys) -> rl.LoaderConfig:
    ds = rl.DatasetConfig(name=NAME, data_dir=root, split=split, language_key=None, standardize=standardize,
                          **{"image_keys": {"primary": "image"}, "action_keys": ("action",), **keys})
    return rl.LoaderConfig(datasets=[ds], batch_size=4, action_horizon=2, image_size=(8, 8), shuffle=True, seed=3,
                           num_batches=5)


def _batches(cfg: rl.LoaderConfig) -> list[dict]:
    return list(rl.create_data_loader(cfg, process_index=0, process_count=1))


def _rows(root: str, batches: list[dict]):
    """(generated episode id, step, state row) of every row: TFDS stores episodes in a shuffled order."""
    ds = open_dataset(root, NAME)
    ids = [int(ds.episode("train", i)["episode_metadata"]["id"]) for i in range(EPISODES)]
    for b in batches:
        for e, t, state in zip(b["episode_index"].tolist(), b["step_index"].tolist(), b["state"], strict=True):
            yield ids[e], t, state


def test_dynamic_shape_state_with_one_size_per_episode_is_read(ragged_dir):
    batches = _batches(_config(ragged_dir, state_keys=("v",)))
    assert batches[0]["state"].shape == (4, 3)
    for e, t, state in _rows(ragged_dir, batches):
        np.testing.assert_array_equal(state, _v(e, t))


def test_sequence_of_tensors_as_state_is_stacked_per_step(ragged_dir):
    batches = _batches(_config(ragged_dir, state_keys=("pairs",)))
    assert batches[0]["state"].shape == (4, 4)
    for e, t, state in _rows(ragged_dir, batches):
        np.testing.assert_array_equal(state, np.concatenate(_pairs(e, t)))


def test_standardize_sees_ragged_fields_it_does_not_use(ragged_dir):
    def standardize(episode: dict) -> dict:  # whole episodes: every field is decoded, ragged ones too
        assert len(episode["steps"]["observation"]["w"]) == STEPS
        return episode

    batches = _batches(_config(ragged_dir, state_keys=("pairs",), standardize=standardize))
    for e, t, state in _rows(ragged_dir, batches):
        np.testing.assert_array_equal(state, np.concatenate(_pairs(e, t)))


def test_state_key_whose_steps_differ_in_size_is_refused_when_built(ragged_dir):
    with pytest.raises(rl.ConfigError, match=r"'steps/observation/w' has steps of different sizes \(\[2, 3\]\)"):
        rl.create_data_loader(_config(ragged_dir, state_keys=("w",)), process_index=0, process_count=1)


def test_state_key_whose_size_changes_in_a_later_episode_names_it(ragged_dir):
    # The size is learned from the first episode; whichever episode the odd one is, a pass meets a mismatch.
    cfg = dataclasses.replace(_config(ragged_dir, state_keys=("u",)), num_batches=None, shuffle=False)
    with pytest.raises(rl.ConfigError, match=r"state keys \['steps/observation/u'\] give [34] values per step "
                                             r"around step \d of episode \d, [34] elsewhere"):
        for _ in rl.create_data_loader(cfg, process_index=0, process_count=1):
            pass


@pytest.mark.parametrize(("camera", "holds"), [("cams", "a sequence of images in each step"),
                                               ("episode_metadata/goal", "an episode-level feature"),
                                               ("action", "a Tensor of float32 (2,), not an image")])
def test_camera_key_that_is_not_one_image_per_step_is_refused(ragged_dir, camera, holds):
    cfg = _config(ragged_dir, image_keys={"primary": camera})
    pattern = rf"camera 'primary' -> '[\w/]*{camera.split('/')[-1]}' is {re.escape(holds)}"
    with pytest.raises(rl.ConfigError, match=pattern):
        rl.create_data_loader(cfg, process_index=0, process_count=1)


def test_partial_reads_slice_the_steps_of_sequences_inside_steps(ragged_dir):
    loader = rl.create_data_loader(_config(ragged_dir, state_keys=("v",)), process_index=0, process_count=1)
    reader = loader.builder.datasets[0].source  # the partial-read path (no standardize)
    ds = open_dataset(ragged_dir, NAME)
    for e in range(EPISODES):
        whole = ds.episode("train", e)["steps"]["observation"]
        pairs, cams = reader.fetch(e, [("steps/observation/pairs", 1, 3), ("steps/observation/cams", 2, 3)])
        assert len(pairs) == 2 and len(cams) == 1
        for got, want in zip(pairs, whole["pairs"][1:3], strict=True):
            np.testing.assert_array_equal(got, want)
        assert cams[0].frames == whole["cams"][2].frames


@pytest.mark.parametrize("mode", ["stretch", "pad"])
def test_cameras_stored_as_raw_pixels_equal_the_same_pixels_stored_as_png(ragged_dir, mode):
    cams = {"png": "image", "raw": "raw", "png16": "depth", "raw16": "raw_depth"}
    cfg = dataclasses.replace(_config(ragged_dir, state_keys=("v",), image_keys=cams), image_size=(11, 6),
                              resize_mode=mode)
    for b in _batches(cfg):
        assert b["image"]["raw"].shape == (4, 11, 6, 3)
        np.testing.assert_array_equal(b["image"]["raw"], b["image"]["png"])
        np.testing.assert_array_equal(b["image"]["raw16"], b["image"]["png16"])
        assert b["image"]["raw"].std() > 0 and b["image"]["raw16"].std() > 0
