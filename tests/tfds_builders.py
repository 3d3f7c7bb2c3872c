"""Tiny RLDS datasets written by TFDS itself (GeneratorBasedBuilder), the ground truth of the reader tests.

`write_all(data_dir)` writes every dataset of DATASETS and returns a description of each (see `describe`).
TensorFlow / TFDS are imported inside the functions only: importing this module costs nothing.

The features cover every feature type RLDS datasets use: a JPEG 3-channel camera (gradients, shapes, mild
noise, like a real camera frame), a uint16 1-channel PNG depth map, a 4-channel PNG, float64 / float32 /
int32 / uint8 / bool tensors with encodings none, zlib and bytes, Scalars, Text (some empty, some
non-ASCII), ClassLabel, nested observation and action dicts, keys with ':' and '-', episode metadata.
Episodes have 1..12 steps. Everything is a pure function of (split, episode index), see `make_episode`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

H, W = 16, 20
LABELS = ["reach", "grasp", "lift", "place"]
META_LABELS = ["success", "failure"]

# name -> (file format, {split: number of episodes}, shards per split)
DATASETS: dict[str, tuple[str, dict[str, int], int]] = {
    "rich_rlds": ("tfrecord", {"train": 24, "val": 7, "test": 5}, 3),
    "rich_rlds_ar": ("array_record", {"train": 10, "val": 4}, 2),
}
VERSION = "1.0.0"
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def episode_length(split: str, e: int) -> int:
    """1..12 steps, varied."""
    return 1 + (e * 5 + SPLIT_SEEDS[split] * 3) % 12


def camera_frame(rng: np.random.Generator, t: int, e: int) -> np.ndarray:
    """A camera-like uint8 frame: colour gradients, a moving square and a disc, mild noise."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.stack([x * 255 / (W - 1), y * 255 / (H - 1), 128 + 60 * np.sin((x + y + 3 * e) / 5)], axis=-1)
    sy, sx = (2 + t) % (H - 5), (3 + 2 * t + e) % (W - 5)
    img[sy:sy + 5, sx:sx + 5] = (220, 40 + 10 * e % 200, 30)
    disc = (y - H / 2) ** 2 + (x - (W / 3 + e % 5)) ** 2 < 9
    img[disc] = (30, 30, 200)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def depth_frame(t: int, e: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    depth = 500 + 40 * x + 90 * y + 7 * e + t
    depth[4:9, 5:11] = 60000 - e  # an object near the top of the uint16 range
    return depth.astype(np.uint16)[..., None]


def rgba_frame(rng: np.random.Generator, t: int, e: int) -> np.ndarray:
    rgb = camera_frame(rng, t + 1, e + 1)
    y, x = np.mgrid[0:H, 0:W]
    alpha = ((x * 12 + y * 5 + t * 30) % 256).astype(np.uint8)
    return np.concatenate([rgb, alpha[..., None]], axis=-1)


def make_episode(split: str, e: int) -> dict[str, Any]:
    """Episode e of a split, as the nested dict TFDS encodes (the same input for every dataset)."""
    rng = np.random.default_rng(1000 * SPLIT_SEEDS[split] + e)
    T = episode_length(split, e)
    instruction = "" if e % 4 == 0 else ("pick the cube \u2014 gently \u2713" if e % 4 == 1 else f"task {e}")
    steps = []
    for t in range(T):
        steps.append({
            "observation": {
                "image": camera_frame(rng, t, e),
                "depth": depth_frame(t, e),
                "rgba": rgba_frame(rng, t, e),
                "state": np.array([0.1 * t, -1.5 * e, np.pi * t / 7], np.float64),
                "joint:pos": rng.normal(0, 1, (2,)).astype(np.float32),
                "grip-force": np.array([[t, -e], [e * t, 2**31 - 1 - t]], np.int32),
                "mask": np.array([t % 2, 255, e % 256, 7], np.uint8),
                "flag": bool((t + e) % 3 == 0),
            },
            "action": {
                "delta": rng.uniform(-1, 1, (2,)).astype(np.float32),
                "arm:ee": np.array([e, t, e * 0.25 - t * 1e-3], np.float64),
                "gripper-open": bool(t % 2),
            },
            "reward": np.float32(1.0 if t == T - 1 else 0.0),
            "discount": np.float32(1.0),
            "is_first": t == 0,
            "is_last": t == T - 1,
            "is_terminal": t == T - 1 and e % 2 == 0,
            "language_instruction": instruction,
            "reasoning": "" if t % 3 == 0 else f"step {t}: move {'left' if t % 2 else 'right'}",
            "phase": t % len(LABELS),
            "step_count": np.int64(t + 100 * e),
        })
    return {
        "steps": steps,
        "episode_metadata": {
            "file_path": f"/data/{split}/episode_{e:03d}.h5",
            "episode_id": np.int64(e),
            "split-name:orig": split,
            "outcome": e % 2,
            "calibration": np.array([[1.0, 0.5], [e, 1 - T]], np.float32),
        },
    }


def _features():
    import tensorflow_datasets as tfds

    tf = tfds.features
    return tf.FeaturesDict({
        "steps": tf.Dataset({
            "observation": tf.FeaturesDict({
                "image": tf.Image(shape=(H, W, 3), dtype=np.uint8, encoding_format="jpeg"),
                "depth": tf.Image(shape=(H, W, 1), dtype=np.uint16, encoding_format="png"),
                "rgba": tf.Image(shape=(H, W, 4), dtype=np.uint8, encoding_format="png"),
                "state": tf.Tensor(shape=(3,), dtype=np.float64),
                "joint:pos": tf.Tensor(shape=(2,), dtype=np.float32, encoding=tf.Encoding.ZLIB),
                "grip-force": tf.Tensor(shape=(2, 2), dtype=np.int32, encoding=tf.Encoding.BYTES),
                "mask": tf.Tensor(shape=(4,), dtype=np.uint8),
                "flag": tf.Scalar(dtype=np.bool_),
            }),
            "action": tf.FeaturesDict({
                "delta": tf.Tensor(shape=(2,), dtype=np.float32),
                "arm:ee": tf.Tensor(shape=(3,), dtype=np.float64, encoding=tf.Encoding.ZLIB),
                "gripper-open": tf.Scalar(dtype=np.bool_),
            }),
            "reward": tf.Scalar(dtype=np.float32),
            "discount": tf.Scalar(dtype=np.float32),
            "is_first": tf.Scalar(dtype=np.bool_),
            "is_last": tf.Scalar(dtype=np.bool_),
            "is_terminal": tf.Scalar(dtype=np.bool_),
            "language_instruction": tf.Text(),
            "reasoning": tf.Text(),
            "phase": tf.ClassLabel(names=LABELS),
            "step_count": tf.Scalar(dtype=np.int64),
        }),
        "episode_metadata": tf.FeaturesDict({
            "file_path": tf.Text(),
            "episode_id": tf.Scalar(dtype=np.int64),
            "split-name:orig": tf.Text(),
            "outcome": tf.ClassLabel(names=META_LABELS),
            "calibration": tf.Tensor(shape=(2, 2), dtype=np.float32, encoding=tf.Encoding.BYTES),
        }),
    })


def _builder_class(name: str, splits: dict[str, int]):
    import tensorflow_datasets as tfds

    class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(VERSION)

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=_features(),
                                         description="tiny RLDS test dataset")

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split, n) for split, n in splits.items()}

        def _generate_examples(self, split, n):
            for e in range(n):
                yield f"{split}_{e}", make_episode(split, e)

    _Builder.name = name
    return _Builder


def write_with_tfds(data_dir: str, name: str, features: Any, examples: Any) -> Any:
    """Write a one-split ("train") dataset with TFDS: `features()` -> the FeaturesDict, `examples()` -> the
    examples in order. Returns the builder (its `as_dataset` is TFDS's reading of what it wrote)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow_datasets as tfds

    class WrittenByTfds(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(VERSION)

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=features())

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            yield from enumerate(examples())

    WrittenByTfds.name = name
    builder = WrittenByTfds(data_dir=data_dir)
    builder.download_and_prepare()
    return builder


def write_dataset(data_dir: str, name: str) -> dict[str, Any]:
    """Write one dataset of DATASETS with TFDS; return its description."""
    import tensorflow_datasets as tfds

    file_format, splits, num_shards = DATASETS[name]
    builder = _builder_class(name, splits)(data_dir=data_dir, file_format=file_format)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=num_shards))
    return describe(data_dir, name)


def describe(data_dir: str, name: str) -> dict[str, Any]:
    """What `write_dataset` wrote: name, version, path of the version folder, format, split sizes, shard
    count, steps per split and the generated episodes' lengths by (split, episode_id)."""
    file_format, splits, num_shards = DATASETS[name]
    return {
        "name": name,
        "version": VERSION,
        "data_dir": data_dir,
        "path": os.path.join(data_dir, name, VERSION),
        "file_format": file_format,
        "splits": dict(splits),
        "num_shards": num_shards,
        "num_steps": {s: sum(episode_length(s, e) for e in range(n)) for s, n in splits.items()},
        "episode_lengths": {s: [episode_length(s, e) for e in range(n)] for s, n in splits.items()},
    }


def write_all(data_dir: str) -> dict[str, dict[str, Any]]:
    """Write every dataset of DATASETS into data_dir; {name: description}."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return {name: write_dataset(data_dir, name) for name in DATASETS}


# --- reading back: TFDS's view and ours, in one comparable form ----------------------------------------


def _stack_steps(steps: list[dict]) -> dict:
    """[step dict] -> dict of arrays stacked over steps (the layout our decoder returns)."""
    first = steps[0]
    return {k: _stack_steps([s[k] for s in steps]) if isinstance(v, dict) else np.stack([s[k] for s in steps])
            for k, v in first.items()}


def tfds_episodes(path: str, spec: str) -> list[dict]:
    """Episodes of a split spec as TFDS reads them, steps stacked, text as bytes.

    TFRecord: `as_dataset(split, shuffle_files=False)`. ArrayRecord (which has no tf.data reader in TFDS):
    the records of `as_data_source(split)` (raw bytes) decoded by the same `deserialize_example` that
    `as_dataset` maps over a tf.data pipeline (the data source's own numpy decoding needs OpenCV for
    uint16 PNGs).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(path)
    if builder.info.file_format.value == "array_record":
        raw_bytes = tfds.decode.DeserializeMethod.RAW_BYTES
        source = builder.as_data_source(split=spec, deserialize_method=raw_bytes)
        raw = tf.constant([source[i] for i in range(len(source))], dtype=tf.string)
        dataset = tf.data.Dataset.from_tensor_slices(raw).map(builder.info.features.deserialize_example)
    else:
        dataset = builder.as_dataset(split=spec, shuffle_files=False)
    out = []
    for ep in dataset:
        steps = list(tfds.as_numpy(ep["steps"]))
        ep = tfds.as_numpy({k: v for k, v in ep.items() if k != "steps"})
        ep["steps"] = _stack_steps(steps)
        out.append(ep)
    return out


def materialize(value: Any) -> Any:
    """Our decoded episode -> plain nested dict of numpy arrays (images decoded, text as str)."""
    from rlds_loader.tfds.features import EncodedImage

    if isinstance(value, dict):
        return {k: materialize(v) for k, v in value.items()}
    if hasattr(value, "decode_all"):
        return value.decode_all()
    if isinstance(value, EncodedImage):
        return value.decode()
    return value


def _as_text(x: Any) -> Any:
    if isinstance(x, bytes):
        return x.decode("utf-8")
    return x


def assert_same_episode(ours: dict, theirs: dict, where: str = "") -> None:
    """Value-for-value equality of one episode (ours materialized, TFDS's as read); text compared as str,
    numbers by dtype, shape and value."""
    assert set(ours) == set(theirs), f"{where}: keys {sorted(ours)} != {sorted(theirs)}"
    for k in theirs:
        a, b, at = ours[k], theirs[k], f"{where}/{k}"
        if isinstance(b, dict):
            assert isinstance(a, dict), at
            assert_same_episode(a, b, at)
            continue
        a, b = np.asarray(a), np.asarray(b)
        if b.dtype.kind in "SO" or a.dtype.kind in "SOU":
            av = [_as_text(x) for x in a.ravel().tolist()]
            bv = [_as_text(x) for x in b.ravel().tolist()]
            assert a.shape == b.shape and av == bv, f"{at}: {av!r} != {bv!r}"
        else:
            assert a.dtype == b.dtype, f"{at}: dtype {a.dtype} != {b.dtype}"
            assert a.shape == b.shape, f"{at}: shape {a.shape} != {b.shape}"
            np.testing.assert_array_equal(a, b, err_msg=at)
