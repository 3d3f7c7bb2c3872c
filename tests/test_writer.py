"""The writer against TFDS itself, and our decoding of data written by TFDS's own builder.

TensorFlow and tensorflow_datasets are test dependencies: they are imported once, in the session fixture.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import simplejpeg

from rlds_loader.tfds import features as F
from rlds_loader.tfds import storage
from rlds_loader.tfds.example_proto import Example, parse_example, serialize_example
from rlds_loader.tfds.reader import open_dataset
from rlds_loader.tfds.tfrecord import scan
from rlds_loader.tfds.writer import shard_bounds, write_dataset

STEP_COUNTS = {"train": [0, 1, 3, 2, 4], "val": [2]}
# image keys that TFDS encodes itself from arrays (TF's encoder, so bytes differ from ours)
TF_ENCODED_IMAGES = {
    "steps/observation/image",
    "steps/observation/gray",
    "steps/observation/rgba",
    "steps/observation/depth",
    "episode_metadata/cover",
}


def camera_like(h: int, w: int, c: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([90 + 50 * np.sin(0.25 * x + 0.13 * y + k) + 30 * np.cos(0.2 * y - k) for k in range(c)], -1)
    img[h // 3 : h // 2, w // 4 : w // 2] += 40  # a hard edge
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def make_episode(episode_id: int, num_steps: int) -> dict:
    rng = np.random.default_rng(episode_id)
    steps = []
    for t in range(num_steps):
        steps.append(
            {
                "observation": {
                    "image": camera_like(24, 32, 3, 10 * episode_id + t),
                    "wrist": simplejpeg.encode_jpeg(camera_like(24, 32, 3, 999 - t), quality=90),
                    "gray": camera_like(24, 32, 1, t),
                    "rgba": rng.integers(0, 256, (6, 8, 4), dtype=np.uint8),
                    "depth": rng.integers(0, 65536, (6, 8, 1), dtype=np.uint16),
                    "state": rng.normal(size=3),
                    "zz": rng.normal(size=2).astype(np.float32),
                    "bb": np.array([t, -episode_id], np.int32),
                    "dyn": np.full((t + 1, 2), t, np.uint8),
                    "u64": np.array([2**64 - 1 - t, t], np.uint64),
                    "i8": np.array([-128, 127], np.int8),
                    "f16": np.array([0.5, -t], np.float16),
                },
                "action": rng.normal(size=4).astype(np.float32),
                "tokens": list(range(t)),
                "language_instruction": "" if t == 0 else f"pick {episode_id} ✓",
                "reward": float(t),
                "is_first": t == 0,
                "label": t % 3,
            }
        )
    return {
        "steps": steps,
        "episode_metadata": {
            "file_path": f"/raw/{episode_id}",
            "episode_id": episode_id,
            "ok": episode_id % 2 == 0,
            "cover": camera_like(6, 8, 3, episode_id),
            "names": np.array([b"x", b""], dtype=object),
        },
    }


def episodes(split: str) -> list[dict]:
    base = 0 if split == "train" else 100
    return [make_episode(base + i, n) for i, n in enumerate(STEP_COUNTS[split])]


def our_features() -> F.FeaturesDict:
    """The same tree as the TFDS builder below, built with our classes."""
    return F.FeaturesDict(
        {
            "steps": F.Dataset(
                {
                    "observation": {
                        "image": F.Image(shape=(24, 32, 3), encoding_format="jpeg"),
                        "wrist": F.Image(shape=(24, 32, 3), encoding_format="jpeg"),
                        "gray": F.Image(shape=(24, 32, 1), encoding_format="png"),
                        "rgba": F.Image(shape=(6, 8, 4), encoding_format="png"),
                        "depth": F.Image(shape=(6, 8, 1), dtype=np.uint16, encoding_format="png"),
                        "state": F.Tensor(shape=(3,), dtype=np.float64),
                        "zz": F.Tensor(shape=(2,), dtype=np.float32, encoding="zlib"),
                        "bb": F.Tensor(shape=(2,), dtype=np.int32, encoding="bytes"),
                        "dyn": F.Tensor(shape=(None, None), dtype=np.uint8, encoding="zlib"),
                        "u64": F.Tensor(shape=(2,), dtype=np.uint64),
                        "i8": F.Tensor(shape=(2,), dtype=np.int8),
                        "f16": F.Tensor(shape=(2,), dtype=np.float16),
                    },
                    "action": F.Tensor(shape=(4,), dtype=np.float32),
                    "tokens": F.Sequence(F.Tensor(shape=(), dtype=np.int64)),
                    "language_instruction": F.Text(),
                    "reward": F.Scalar(np.float32),
                    "is_first": F.Scalar(np.bool_),
                    "label": F.ClassLabel(names=["a", "b", "c"]),
                }
            ),
            "episode_metadata": {
                "file_path": F.Text(),
                "episode_id": F.Scalar(np.int64),
                "ok": F.Scalar(np.bool_),
                "cover": F.Image(shape=(6, 8, 3), encoding_format="png"),
                "names": F.Tensor(shape=(2,), dtype=object),
            },
        }
    )


@pytest.fixture(scope="session")
def tfds_mod():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    tf.config.set_visible_devices([], "GPU")
    return pytest.importorskip("tensorflow_datasets"), tf


@pytest.fixture(scope="session")
def tfds_written(tfds_mod, tmp_path_factory):
    """A dataset written by TFDS's own GeneratorBasedBuilder: (version folder, builder)."""
    tfds, _ = tfds_mod
    tf_features = tfds.features

    class RldsLoaderTfdsWritten(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tf_features.FeaturesDict(
                    {
                        "steps": tf_features.Dataset(
                            {
                                "observation": {
                                    "image": tf_features.Image(shape=(24, 32, 3), encoding_format="jpeg"),
                                    "wrist": tf_features.Image(shape=(24, 32, 3), encoding_format="jpeg"),
                                    "gray": tf_features.Image(shape=(24, 32, 1), encoding_format="png"),
                                    "rgba": tf_features.Image(shape=(6, 8, 4), encoding_format="png"),
                                    "depth": tf_features.Image(shape=(6, 8, 1), dtype=np.uint16, encoding_format="png"),
                                    "state": tf_features.Tensor(shape=(3,), dtype=np.float64),
                                    "zz": tf_features.Tensor(shape=(2,), dtype=np.float32, encoding="zlib"),
                                    "bb": tf_features.Tensor(shape=(2,), dtype=np.int32, encoding="bytes"),
                                    "dyn": tf_features.Tensor(shape=(None, None), dtype=np.uint8, encoding="zlib"),
                                    "u64": tf_features.Tensor(shape=(2,), dtype=np.uint64),
                                    "i8": tf_features.Tensor(shape=(2,), dtype=np.int8),
                                    "f16": tf_features.Tensor(shape=(2,), dtype=np.float16),
                                },
                                "action": tf_features.Tensor(shape=(4,), dtype=np.float32),
                                "tokens": tf_features.Sequence(tf_features.Tensor(shape=(), dtype=np.int64)),
                                "language_instruction": tf_features.Text(),
                                "reward": tf_features.Scalar(dtype=np.float32),
                                "is_first": tf_features.Scalar(dtype=np.bool_),
                                "label": tf_features.ClassLabel(names=["a", "b", "c"]),
                            }
                        ),
                        "episode_metadata": {
                            "file_path": tf_features.Text(),
                            "episode_id": tf_features.Scalar(dtype=np.int64),
                            "ok": tf_features.Scalar(dtype=np.bool_),
                            "cover": tf_features.Image(shape=(6, 8, 3), encoding_format="png"),
                            "names": tf_features.Tensor(shape=(2,), dtype=np.object_),
                        },
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in STEP_COUNTS}

        def _generate_examples(self, split):
            for ep in episodes(split):
                yield int(ep["episode_metadata"]["episode_id"]), ep

    data_dir = tmp_path_factory.mktemp("tfds_written")
    builder = RldsLoaderTfdsWritten(data_dir=str(data_dir), file_format="tfrecord")
    builder.download_and_prepare()
    return str(builder.data_dir), builder


def tf_episodes(tf, builder, split: str) -> list[dict]:
    """as_dataset output as numpy: {"steps": [step dicts], other keys...}, in file order."""
    out = []
    for ex in builder.as_dataset(split=split, shuffle_files=False):
        steps = [tf.nest.map_structure(lambda t: t.numpy(), s) for s in ex["steps"]]
        rest = {k: tf.nest.map_structure(lambda t: t.numpy(), v) for k, v in ex.items() if k != "steps"}
        out.append({"steps": steps, **rest})
    return out


def read_records(path: str) -> list[bytes]:
    fs, p = storage.filesystem(path)
    return [data for _, _, data in scan(fs, p)]


def assert_same(ours, theirs, where: str) -> None:
    """Our decoded value equals TFDS's: str vs bytes for text, exact arrays otherwise."""
    if isinstance(ours, dict):
        assert set(ours) == set(theirs), where
        for k in ours:
            assert_same(ours[k], theirs[k], f"{where}/{k}")
    elif isinstance(ours, F.EncodedImage):
        np.testing.assert_array_equal(ours.decode(), theirs, err_msg=where)
    elif isinstance(ours, str):
        assert ours == theirs.decode("utf-8"), where
    else:
        theirs = np.asarray(theirs)
        ours = np.asarray(ours)
        assert ours.dtype == theirs.dtype, f"{where}: {ours.dtype} != {theirs.dtype}"
        np.testing.assert_array_equal(ours, theirs, err_msg=where)


def our_step(steps: dict, t: int) -> dict:
    """Step t of our stacked per-step output, images decoded."""
    out = {}
    for k, v in steps.items():
        if isinstance(v, dict):
            out[k] = our_step(v, t)
        elif isinstance(v, F.EncodedImages):
            out[k] = F.EncodedImage(v.raw(t), dtype=v.dtype, shape=v.image_shape)
        else:
            out[k] = v[t]
    return out


def label_reader(folder: str):
    def names(path: str):
        f = os.path.join(folder, F.labels_file_name(path))
        return F.parse_labels_file(open(f).read()) if os.path.exists(f) else None

    return names


# --------------------------------------------------------------------------- data written by TFDS itself


def test_from_json_of_tfds_features_json(tfds_written):
    folder, _ = tfds_written
    raw = json.load(open(os.path.join(folder, "features.json")))
    feat = F.from_json(raw, label_reader(folder))
    assert feat.to_json() == raw
    assert feat == our_features()
    assert feat["steps/label"].names == ["a", "b", "c"]


@pytest.mark.parametrize("split", list(STEP_COUNTS))
def test_decode_tfds_records_equals_as_dataset(tfds_mod, tfds_written, split):
    _, tf = tfds_mod
    folder, builder = tfds_written
    feat = F.from_json(json.load(open(os.path.join(folder, "features.json"))), label_reader(folder))
    theirs = tf_episodes(tf, builder, split)
    records = [
        r
        for f in sorted(os.listdir(folder))
        if f"-{split}.tfrecord" in f
        for r in read_records(os.path.join(folder, f))
    ]
    assert len(records) == len(theirs) == len(STEP_COUNTS[split])
    for record, tf_ep in zip(records, theirs, strict=True):
        flat = parse_example(record)
        ours = feat.decode_example(flat)
        T = len(tf_ep["steps"])
        assert feat.num_steps(flat) == T
        assert_same(ours["episode_metadata"], tf_ep["episode_metadata"], "episode_metadata")
        for t in range(T):
            assert_same(our_step(ours["steps"], t), tf_ep["steps"][t], f"step {t}")
        assert len(ours["steps"]["observation"]["image"]) == T and ours["steps"]["action"].shape == (T, 4)


def test_encode_matches_tfds_serializer_per_key(tfds_written):
    """Our encode_example + serialize_example writes each feature byte for byte as TFDS did.

    (TFDS's order of keys inside the message changes from process to process, so compare per key.)
    """
    folder, _ = tfds_written
    feat = our_features()
    by_id = {int(ep["episode_metadata"]["episode_id"]): ep for split in STEP_COUNTS for ep in episodes(split)}
    files = [f for f in os.listdir(folder) if ".tfrecord-" in f]
    checked = 0
    for fname in files:
        for record in read_records(os.path.join(folder, fname)):
            theirs = Example.FromString(record).features.feature
            ep_id = theirs["episode_metadata/episode_id"].int64_list.value[0]
            ours = Example.FromString(serialize_example(feat.encode_example(by_id[ep_id]))).features.feature
            assert set(ours) == set(theirs)
            for key in ours:
                if key in TF_ENCODED_IMAGES:
                    continue
                assert ours[key].SerializeToString() == theirs[key].SerializeToString(), key
            checked += 1
    assert checked == sum(len(v) for v in STEP_COUNTS.values())


def test_tf_jpeg_decode_is_bit_identical(tfds_mod):
    _, tf = tfds_mod
    for seed in range(3):
        img = camera_like(60, 80, 3, seed)
        for data in (
            tf.io.encode_jpeg(img).numpy(),
            simplejpeg.encode_jpeg(img, quality=85, colorsubsampling="422"),
            simplejpeg.encode_jpeg(img, quality=95, colorsubsampling="444"),
        ):
            np.testing.assert_array_equal(F.decode_image(data), tf.io.decode_image(data, channels=3).numpy())
            np.testing.assert_array_equal(
                F.decode_image(data, channels=1), tf.io.decode_image(data, channels=1).numpy()
            )


def test_png_channel_conversions_match_tf(tfds_mod):
    _, tf = tfds_mod
    rng = np.random.default_rng(0)
    for dtype in (np.uint8, np.uint16):
        for have in (1, 2, 3, 4):
            img = rng.integers(0, np.iinfo(dtype).max, (5, 6, have), dtype=dtype)
            data = tf.io.encode_png(img).numpy()
            for want in (1, 3, 4):
                for out_dtype in (tf.uint8, tf.uint16):
                    theirs = tf.io.decode_image(data, channels=want, dtype=out_dtype).numpy()
                    ours = F.decode_image(data, out_dtype.as_numpy_dtype, want)
                    np.testing.assert_array_equal(ours, theirs, err_msg=f"{dtype} {have}->{want} {out_dtype}")


# --------------------------------------------------------------------------- data written by our writer


@pytest.fixture(scope="module")
def ours_written(tmp_path_factory):
    root = tmp_path_factory.mktemp("ours")
    path = write_dataset(
        str(root),
        "rlds_loader_test_ds",
        our_features(),
        {"train": episodes("train"), "val": episodes("val")},
        num_shards={"train": 3, "val": 1},
        description="test data",
    )
    return path


def test_writer_layout(ours_written):
    files = sorted(os.listdir(ours_written))
    assert files == [
        "dataset_info.json",
        "features.json",
        "rlds_loader_test_ds-train.tfrecord-00000-of-00003",
        "rlds_loader_test_ds-train.tfrecord-00001-of-00003",
        "rlds_loader_test_ds-train.tfrecord-00002-of-00003",
        "rlds_loader_test_ds-val.tfrecord-00000-of-00001",
        "steps-label.labels.txt",
    ]
    info = json.load(open(os.path.join(ours_written, "dataset_info.json")))
    train = info["splits"][0]
    assert info["name"] == "rlds_loader_test_ds" and info["version"] == "1.0.0" and info["fileFormat"] == "tfrecord"
    assert (
        train["shardLengths"] == ["1", "2", "2"]
        and train["filepathTemplate"] == "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
    )
    # episodes in the given order, in contiguous chunks
    ids, num_bytes = [], 0
    for i in range(3):
        for rec in read_records(os.path.join(ours_written, f"rlds_loader_test_ds-train.tfrecord-0000{i}-of-00003")):
            ids.append(int(parse_example(rec)["episode_metadata/episode_id"][0]))
            num_bytes += len(rec)
    assert ids == [0, 1, 2, 3, 4] and int(train["numBytes"]) == num_bytes
    assert open(os.path.join(ours_written, "steps-label.labels.txt")).read() == "a\nb\nc\n"
    assert shard_bounds(5, 3) == [(0, 1), (1, 3), (3, 5)]


@pytest.mark.parametrize("split", list(STEP_COUNTS))
def test_tfds_reads_our_dataset(tfds_mod, ours_written, split):
    tfds, tf = tfds_mod
    builder = tfds.builder_from_directory(ours_written)
    assert builder.info.splits[split].num_examples == len(STEP_COUNTS[split])
    theirs = tf_episodes(tf, builder, split)
    feat = our_features()
    for given, tf_ep in zip(episodes(split), theirs, strict=True):
        assert len(tf_ep["steps"]) == len(given["steps"])
        meta = tf_ep["episode_metadata"]
        assert meta["file_path"].decode() == given["episode_metadata"]["file_path"]
        np.testing.assert_array_equal(meta["cover"], given["episode_metadata"]["cover"])
        ours = feat.decode_example(parse_example(serialize_example(feat.encode_example(given))))
        for t, (step, tf_step) in enumerate(zip(given["steps"], tf_ep["steps"], strict=True)):
            obs, tf_obs = step["observation"], tf_step["observation"]
            for key in ("gray", "rgba", "depth", "bb", "dyn", "u64", "i8", "f16", "zz"):
                np.testing.assert_array_equal(tf_obs[key], obs[key], err_msg=key)
            np.testing.assert_array_equal(tf_obs["state"], obs["state"].astype(np.float32).astype(np.float64))
            # JPEG: TF's pixels equal ours exactly, and the input within JPEG tolerance
            ours_jpeg = ours["steps"]["observation"]["image"][t]
            np.testing.assert_array_equal(ours_jpeg, tf_obs["image"])
            assert np.abs(tf_obs["image"].astype(int) - obs["image"]).mean() < 5  # q95, 4:2:0 chroma
            np.testing.assert_array_equal(tf_obs["wrist"], F.decode_image(obs["wrist"]))
            np.testing.assert_array_equal(tf_step["action"], step["action"])
            assert tf_step["tokens"].tolist() == step["tokens"]
            assert tf_step["language_instruction"].decode() == step["language_instruction"]
            assert tf_step["reward"] == step["reward"] and tf_step["is_first"] == step["is_first"]
            assert tf_step["label"] == step["label"]


def test_array_record_format(tfds_mod, tmp_path):
    tfds, _ = tfds_mod
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    path = write_dataset(
        str(tmp_path),
        "ar_ds",
        our_features(),
        {"train": episodes("train")},
        num_shards=2,
        file_format="array_record",
    )
    files = sorted(f for f in os.listdir(path) if "array_record" in f)
    assert files == ["ar_ds-train.array_record-00000-of-00002", "ar_ds-train.array_record-00001-of-00002"]
    source = ArrayRecordDataSource([os.path.join(path, f) for f in files])
    assert len(source) == 5
    ids = [int(parse_example(source[i])["episode_metadata/episode_id"][0]) for i in range(5)]
    assert ids == [0, 1, 2, 3, 4]
    builder = tfds.builder_from_directory(path)
    assert builder.info.file_format.value == "array_record"
    ds = builder.as_data_source(split="train")
    assert len(ds) == 5
    assert int(ds[3]["episode_metadata"]["episode_id"]) == 3


def test_empty_dict_and_zero_sized_steps_read_as_tfds_gives_them(tfds_mod, tmp_path):
    tfds, _ = tfds_mod
    feat = F.FeaturesDict({"a": F.Scalar(np.int32), "e": F.FeaturesDict({}),
                           "steps": F.Dataset({"n": F.Scalar(np.int64), "z": F.Tensor(shape=(0,), dtype=np.int32,
                                                                                       encoding="zlib")})})
    steps = [{"n": t, "z": np.zeros(0, np.int32)} for t in range(3)]
    path = write_dataset(str(tmp_path), "empties", feat, {"train": [{"a": 1, "e": {}, "steps": steps}]})
    theirs = next(iter(tfds.as_numpy(tfds.builder_from_directory(path).as_dataset(split="train"))))
    ours = open_dataset(str(tmp_path), "empties").episode("train", 0)
    assert ours["e"] == theirs["e"] == {} and ours["a"] == theirs["a"] == 1
    assert ours["steps"]["z"].shape == (3, 0) and ours["steps"]["n"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("features, splits, message", [
    ({"x": F.Tensor(shape=(3,), dtype=np.uint32, encoding="zlib")}, {"train": [{"x": np.zeros(3, np.uint32)}]},
     "uint32 Tensor with encoding 'zlib'"),
    ({"steps": F.Dataset({"s": F.Sequence(F.Scalar(np.int64), length=2)})}, {"train": [{"steps": []}]},
     "fixed-length Sequence inside"),
    ({"steps": F.Dataset({"x": F.Tensor(shape=(0,), dtype=np.int32)})}, {"train": [{"steps": []}]},
     "0-sized dimension under a variable one"),
    ({"x": F.Scalar(np.int64)}, {"train": [{"x": 1}], "test": []}, "split 'test' has no examples"),
])
def test_writer_refuses_what_tfds_cannot_read_back(tmp_path, features, splits, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        write_dataset(str(tmp_path), "unreadable", F.FeaturesDict(features), splits)


def test_len_mismatch_is_refused(tmp_path):
    feat = F.FeaturesDict({"a": F.Scalar(np.int64)})

    class Lying:
        def __len__(self):
            return 3

        def __iter__(self):
            return iter([{"a": 1}, {"a": 2}])

    with pytest.raises(ValueError, match="yielded 2 episodes"):
        write_dataset(str(tmp_path), "lying", feat, {"train": Lying()}, num_shards=2)
    assert not os.path.exists(os.path.join(tmp_path, "lying", "1.0.0", "dataset_info.json"))


def test_memory_filesystem_roundtrip():
    url = "memory://rlds_loader_writer_test/data"
    path = write_dataset(url, "mem_ds", our_features(), {"train": iter(episodes("train"))}, num_shards=2)
    assert path == url + "/mem_ds/1.0.0"
    fs, root = storage.filesystem(path)
    info = json.loads(fs.cat_file(storage.join(root, "dataset_info.json")))
    assert info["splits"][0]["shardLengths"] == ["2", "3"]
    feat = F.from_json(
        json.loads(fs.cat_file(storage.join(root, "features.json"))),
        lambda p: F.parse_labels_file(fs.cat_file(storage.join(root, F.labels_file_name(p))).decode()),
    )
    steps = []
    for i in range(2):
        for _, _, rec in scan(fs, storage.join(root, f"mem_ds-train.tfrecord-0000{i}-of-00002")):
            steps.append(feat.num_steps(parse_example(rec)))
    assert steps == STEP_COUNTS["train"]
    fs.rm(storage.join(root), recursive=True)


def test_failed_write_leaves_no_dataset_info_and_rewrite_removes_stale_shards(tmp_path):
    feat = F.FeaturesDict({"steps": F.Dataset({"a": F.Scalar(np.int64)})})
    ok = [{"steps": [{"a": i}]} for i in range(4)]
    path = write_dataset(str(tmp_path), "crash_ds", feat, {"train": ok}, num_shards=4)
    assert os.path.exists(os.path.join(path, "dataset_info.json"))

    def failing():
        yield ok[0]
        yield ok[1]
        raise RuntimeError("generator died")

    # one shard, streamed: the generator dies while the shard is being written
    with pytest.raises(RuntimeError, match="generator died"):
        write_dataset(str(tmp_path), "crash_ds", feat, {"train": failing()}, num_shards=1)
    assert not os.path.exists(os.path.join(path, "dataset_info.json"))
    assert not [f for f in os.listdir(path) if ".tmp-" in f or "-of-00001" in f]
    # several shards: the episodes are counted before any shard is written
    with pytest.raises(RuntimeError, match="generator died"):
        write_dataset(str(tmp_path), "crash_ds", feat, {"train": failing()}, num_shards=2)
    assert not os.path.exists(os.path.join(path, "dataset_info.json"))

    write_dataset(str(tmp_path), "crash_ds", feat, {"train": ok}, num_shards=2)
    shards = sorted(f for f in os.listdir(path) if ".tfrecord-" in f)
    assert shards == ["crash_ds-train.tfrecord-00000-of-00002", "crash_ds-train.tfrecord-00001-of-00002"]
    info = json.load(open(os.path.join(path, "dataset_info.json")))
    assert info["splits"][0]["shardLengths"] == ["2", "2"]
