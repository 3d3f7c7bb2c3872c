"""Feature types: features.json round trip and encode -> serialize -> parse -> decode for every type.

No TensorFlow here: the comparisons against TFDS itself are in test_writer.py.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import simplejpeg
from PIL import Image as PILImage

from rlds_loader.errors import CorruptRecordError, FeatureKeyError, UnknownFeatureTypeError
from rlds_loader.tfds import features as F
from rlds_loader.tfds.example_proto import parse_example, serialize_example
from rlds_loader.tfds.features import _png16
from rlds_loader.tfds.features.base import BFLOAT16

INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
FLOAT_DTYPES = [np.float16, np.float32, np.float64] + ([BFLOAT16] if BFLOAT16 is not None else [])


def camera_like(h: int, w: int, c: int, seed: int) -> np.ndarray:
    """Smooth gradients, texture and noise: JPEG behaves as on real frames (flat images hide IDCT errors)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([80 + 40 * np.sin(0.2 * x + 0.1 * y + k) + 30 * np.cos(0.15 * y - k) for k in range(c)], -1)
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def roundtrip(feat: F.FeaturesDict, episode: dict, keys=None) -> dict:
    flat = parse_example(serialize_example(feat.encode_example(episode)))
    return feat.decode_example(flat, keys)


def tensor_cases():
    rng = np.random.default_rng(0)
    cases = {}
    for dt in INT_DTYPES:
        info = np.iinfo(dt)
        cases[f"i_{np.dtype(dt).name}"] = (
            F.Tensor(shape=(3,), dtype=dt),
            np.array([info.min, 0, info.max], dt),
        )
    cases["bool"] = (F.Tensor(shape=(2, 2), dtype=np.bool_), np.array([[True, False], [False, True]]))
    for dt in FLOAT_DTYPES:
        name = np.dtype(dt).name
        cases[f"f_{name}"] = (F.Tensor(shape=(4,), dtype=dt), rng.normal(size=4).astype(dt))
        for enc in ("bytes", "zlib"):
            cases[f"f_{name}_{enc}"] = (
                F.Tensor(shape=(2, 3), dtype=dt, encoding=enc),
                rng.normal(size=(2, 3)).astype(dt),
            )
    cases["u64_bytes"] = (
        F.Tensor(shape=(2,), dtype=np.uint64, encoding="bytes"),
        np.array([2**64 - 1, 2**63 + 5], np.uint64),
    )
    cases["none_dim"] = (
        F.Tensor(shape=(None, 2), dtype=np.int32),
        np.arange(10, dtype=np.int32).reshape(5, 2),
    )
    cases["dynamic_zlib"] = (
        F.Tensor(shape=(None, None), dtype=np.float32, encoding="zlib"),
        np.arange(6, dtype=np.float32).reshape(2, 3),
    )
    cases["string"] = (F.Tensor(shape=(3,), dtype=object), np.array([b"a", b"", b"\xff\x00"], object))
    cases["scalar"] = (F.Scalar(np.float32), np.float32(2.5))
    return cases


def expected_value(feat, value):
    """What a value reads back as: float64 / float16 stored without encoding pass through float32."""
    value = np.asarray(value)
    if feat.encoding == "none" and value.dtype.kind == "f":
        return value.astype(np.float32).astype(value.dtype)
    return value


@pytest.mark.parametrize("name", list(tensor_cases()))
def test_tensor_roundtrip_episode_level_and_per_step(name):
    feat, value = tensor_cases()[name]
    root = F.FeaturesDict({"x": feat, "steps": F.Dataset({"x": feat})})
    episode = {"x": value, "steps": [{"x": value}, {"x": value}]}
    if None in feat.shape and feat.encoding == "none":  # (None, ...) per step: TFDS cannot read it back
        with pytest.raises(ValueError, match="encoding='zlib'"):
            root.encode_example(episode)
        root = F.FeaturesDict({"x": feat})
        out = roundtrip(root, {"x": value})
        np.testing.assert_array_equal(out["x"], value)
        return
    out = roundtrip(root, episode)
    want = expected_value(feat, value)
    assert np.asarray(out["x"]).dtype == want.dtype
    np.testing.assert_array_equal(np.asarray(out["x"]), want)
    per_step = out["steps"]["x"]
    if None in feat.shape and feat.encoding != "none":  # decoded shapes may differ per step: array of arrays
        assert per_step.dtype == object and per_step.shape == (2,)
        for arr in per_step:
            np.testing.assert_array_equal(arr, want)
    else:
        assert per_step.shape == (2,) + want.shape and per_step.dtype == want.dtype
        np.testing.assert_array_equal(per_step, np.stack([want, want]))


def test_float64_reads_back_as_float32_rounding_like_tfds():
    root = F.FeaturesDict({"steps": F.Dataset({"s": F.Tensor(shape=(2,), dtype=np.float64)})})
    value = np.array([0.1, 1e-300])
    out = roundtrip(root, {"steps": {"s": np.stack([value, value])}})
    assert out["steps"]["s"].dtype == np.float64
    np.testing.assert_array_equal(out["steps"]["s"][0], value.astype(np.float32).astype(np.float64))


@pytest.mark.parametrize("encoding", ["zlib", "bytes"])
def test_empty_encoded_tensor_with_a_zero_sized_dimension(encoding):
    # (n, 0) keeps no trace of n; TFDS reads (1, 0) back whatever n was written (numpy alone cannot infer it)
    root = F.FeaturesDict({"t": F.Tensor(shape=(None, 0), dtype=np.int32, encoding=encoding)})
    out = roundtrip(root, {"t": np.zeros((5, 0), np.int32)})["t"]
    assert out.shape == (1, 0) and out.dtype == np.int32


def test_text_classlabel_scalar_bool():
    root = F.FeaturesDict(
        {
            "steps": F.Dataset(
                {
                    "lang": F.Text(),
                    "label": F.ClassLabel(names=["pick", "place"]),
                    "is_last": F.Scalar(np.bool_),
                    "reward": F.Scalar(np.float32),
                }
            ),
            "meta": {"path": F.Text(), "ok": F.Scalar(np.bool_), "n": F.Scalar(np.int64)},
        }
    )
    steps = [
        {"lang": "", "label": "place", "is_last": False, "reward": 0.0},
        {"lang": "héllo ✓", "label": 0, "is_last": True, "reward": 1.5},
    ]
    out = roundtrip(root, {"steps": steps, "meta": {"path": "", "ok": True, "n": -3}})
    assert out["meta"] == {"path": "", "ok": True, "n": -3}
    assert isinstance(out["meta"]["path"], str) and out["meta"]["ok"].dtype == np.bool_
    lang = out["steps"]["lang"]
    assert lang.dtype == object and list(lang) == ["", "héllo ✓"] and all(isinstance(s, str) for s in lang)
    assert out["steps"]["label"].dtype == np.int64 and out["steps"]["label"].tolist() == [1, 0]
    assert out["steps"]["is_last"].dtype == np.bool_ and out["steps"]["is_last"].tolist() == [False, True]
    assert out["steps"]["reward"].tolist() == [0.0, 1.5]


def test_steps_as_dict_of_stacked_arrays_equals_list_of_steps():
    root = F.FeaturesDict({"steps": F.Dataset({"obs": {"s": F.Tensor(shape=(2,), dtype=np.float32)}, "t": F.Text()})})
    stacked = {"obs": {"s": np.arange(6, dtype=np.float32).reshape(3, 2)}, "t": ["a", "b", "c"]}
    listed = [{"obs": {"s": stacked["obs"]["s"][i]}, "t": stacked["t"][i]} for i in range(3)]
    assert serialize_example(root.encode_example({"steps": stacked})) == serialize_example(
        root.encode_example({"steps": listed})
    )


@pytest.mark.parametrize("num_steps", [0, 1])
def test_empty_and_single_step_episodes(num_steps):
    root = F.FeaturesDict(
        {
            "steps": F.Dataset(
                {
                    "img": F.Image(shape=(4, 5, 3), encoding_format="png"),
                    "a": F.Tensor(shape=(2,), dtype=np.float32),
                    "t": F.Text(),
                    "z": F.Tensor(shape=(3,), dtype=np.int16, encoding="zlib"),
                    "seq": F.Sequence(F.Scalar(np.int64)),
                }
            )
        }
    )
    steps = [
        {
            "img": np.full((4, 5, 3), 7, np.uint8),
            "a": np.ones(2, np.float32),
            "t": "x",
            "z": np.array([1, 2, 3], np.int16),
            "seq": [1, 2],
        }
    ] * num_steps
    flat = parse_example(serialize_example(root.encode_example({"steps": steps})))
    assert root.num_steps(flat) == num_steps
    out = root.decode_example(flat)["steps"]
    assert len(out["img"]) == num_steps and out["a"].shape == (num_steps, 2) and out["t"].shape == (num_steps,)
    assert out["z"].shape == (num_steps, 3) and out["z"].dtype == np.int16
    assert out["img"].decode_all().shape == (num_steps, 4, 5, 3)
    assert len(out["seq"]) == num_steps
    if num_steps:
        assert out["img"][0].tolist() == steps[0]["img"].tolist() and out["seq"][0].tolist() == [1, 2]


def test_ragged_sequences_inside_steps():
    root = F.FeaturesDict(
        {
            "steps": F.Dataset(
                {
                    "tokens": F.Sequence(F.Scalar(np.int64)),
                    "points": F.Sequence(F.Tensor(shape=(2,), dtype=np.float32)),
                    "pair": F.Sequence(F.Scalar(np.int32), length=2),
                    "words": F.Sequence(F.Text()),
                }
            ),
            "nested": F.Sequence(F.Sequence(F.Scalar(np.int64))),
        }
    )
    steps = [
        {
            "tokens": list(range(t)),
            "points": np.ones((t, 2), np.float32) * t,
            "pair": [t, -t],
            "words": ["w"] * t,
        }
        for t in range(3)
    ]
    episode = {"steps": steps, "nested": [[], [1], [2, 3]]}
    flat_enc = root.encode_example(episode)
    # TFDS's ragged layout: flat values plus the length of each step's sequence
    assert flat_enc["steps/tokens/ragged_flat_values"].tolist() == [0, 0, 1]
    assert flat_enc["steps/tokens/ragged_row_lengths_0"].tolist() == [0, 1, 2]
    out = roundtrip(root, episode)["steps"]
    assert [x.tolist() for x in out["tokens"]] == [[], [0], [0, 1]]
    assert [x.shape for x in out["points"]] == [(0, 2), (1, 2), (2, 2)]
    assert out["pair"].dtype == np.int32 and out["pair"].tolist() == [[0, 0], [1, -1], [2, -2]]
    assert [list(x) for x in out["words"]] == [[], ["w"], ["w", "w"]]
    nested = roundtrip(root, episode, keys=["nested"])["nested"]
    assert [x.tolist() for x in nested] == [[], [1], [2, 3]]


def _png_bytes(arr: np.ndarray) -> bytes:
    return F.encode_png(arr)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png_images_exact(dtype, channels):
    rng = np.random.default_rng(channels)
    frames = rng.integers(0, np.iinfo(dtype).max, (3, 6, 7, channels), dtype=dtype)
    root = F.FeaturesDict(
        {
            "steps": F.Dataset({"img": F.Image(shape=(6, 7, channels), dtype=dtype, encoding_format="png")}),
            "cover": F.Image(shape=(None, None, channels), dtype=dtype, encoding_format="png"),
        }
    )
    out = roundtrip(root, {"steps": {"img": frames}, "cover": frames[0]})
    imgs = out["steps"]["img"]
    assert isinstance(imgs, F.EncodedImages) and len(imgs) == 3
    assert imgs.shape == (3, 6, 7, channels) and imgs.dtype == dtype and imgs.format == "png"
    assert imgs.raw(1)[:4] == b"\x89PNG"
    np.testing.assert_array_equal(imgs[1], frames[1])
    np.testing.assert_array_equal(imgs[-1], frames[2])
    np.testing.assert_array_equal(imgs.decode_all(), frames)
    np.testing.assert_array_equal(imgs[1:][0], frames[1])
    assert isinstance(out["cover"], F.EncodedImage)
    np.testing.assert_array_equal(out["cover"].decode(), frames[0])


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_images_within_tolerance_and_bytes_kept(channels):
    frame = camera_like(48, 64, channels, seed=channels)
    root = F.FeaturesDict({"steps": F.Dataset({"img": F.Image(shape=(48, 64, channels), encoding_format="jpeg")})})
    given = simplejpeg.encode_jpeg(frame, quality=90, colorspace="GRAY" if channels == 1 else "RGB")
    out = roundtrip(root, {"steps": [{"img": frame}, {"img": given}]})["steps"]["img"]
    assert out.raw(1) == given  # already-encoded bytes are stored unchanged
    decoded = out.decode_all()
    assert decoded.shape == (2, 48, 64, channels) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frame).mean() < 4
    small = out.decode(0, min_height=24, min_width=32)
    assert small.shape == (24, 32, channels)


def test_float32_image_bitcast_png():
    depth = np.random.default_rng(0).normal(size=(5, 4, 1)).astype(np.float32)
    root = F.FeaturesDict({"d": F.Image(shape=(5, 4, 1), dtype=np.float32)})
    np.testing.assert_array_equal(roundtrip(root, {"d": depth})["d"].decode(), depth)


def test_decode_image_channel_and_dtype_conversions():
    rgb = np.random.default_rng(1).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    data = F.encode_png(rgb)
    np.testing.assert_array_equal(F.decode_image(data, channels=4)[..., :3], rgb)
    assert (F.decode_image(data, channels=4)[..., 3] == 255).all()
    np.testing.assert_array_equal(F.decode_image(data, np.uint16), rgb.astype(np.uint16) * 257)
    gray = F.decode_image(data, channels=1)[..., 0].astype(int)
    weights = rgb.astype(int) @ np.array([9797, 19234, 3737])
    np.testing.assert_array_equal(gray, weights >> 15)  # libpng's rgb_to_gray, as TF
    g16 = np.random.default_rng(2).integers(0, 65536, (4, 5, 1), dtype=np.uint16)
    np.testing.assert_array_equal(F.decode_image(F.encode_png(g16), np.uint8), (g16 >> 8).astype(np.uint8))
    np.testing.assert_array_equal(F.decode_image(F.encode_png(g16), np.uint16, channels=3)[..., 2], g16[..., 0])


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_png16_decoder_handles_every_filter(channels):
    """16-bit color PNGs written by Pillow-independent code with Sub/Up/Average/Paeth filters."""
    import struct
    import zlib

    img = np.random.default_rng(channels).integers(0, 65536, (5, 6, channels), dtype=np.uint16)
    raw = img.astype(">u2").view(np.uint8).reshape(5, -1).astype(np.int64)
    bpp = 2 * channels
    rows = []
    prev = np.zeros(raw.shape[1], np.int64)
    for y, kind in enumerate([1, 2, 3, 4, 0]):
        cur = raw[y]
        left = np.concatenate([np.zeros(bpp, np.int64), cur[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
        if kind == 1:
            f = cur - left
        elif kind == 2:
            f = cur - prev
        elif kind == 3:
            f = cur - (left + prev) // 2
        elif kind == 4:
            p = left + prev - up_left
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - up_left)
            f = cur - np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, up_left))
        else:
            f = cur
        rows.append(bytes([kind]) + bytes((f % 256).astype(np.uint8)))
        prev = cur

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ctype = {2: 4, 3: 2, 4: 6}[channels]
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 6, 5, 16, ctype, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )
    assert _png16.is_16bit_color(png)
    np.testing.assert_array_equal(F.decode_image(png, np.uint16), img)


def test_png_palette_and_gray_alpha_via_pillow():
    pal = PILImage.new("P", (3, 2))
    pal.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    pal.putdata([0, 1, 0, 1, 1, 0])
    buf = io.BytesIO()
    pal.save(buf, "PNG")
    out = F.decode_image(buf.getvalue())
    assert out.shape == (2, 3, 3) and out[0, 1].tolist() == [40, 50, 60]


def all_types_features() -> F.FeaturesDict:
    return F.FeaturesDict(
        {
            "steps": F.Dataset(
                {
                    "observation": {
                        "image": F.Image(shape=(8, 10, 3), encoding_format="jpeg", doc="main camera"),
                        "depth": F.Image(shape=(8, 10, 1), dtype=np.uint16, encoding_format="png"),
                        "state": F.Tensor(shape=(3,), dtype=np.float64),
                        "zz": F.Tensor(shape=(2,), dtype=np.float32, encoding="zlib"),
                        "dyn": F.Tensor(shape=(None, None), dtype=np.uint8, encoding="bytes"),
                    },
                    "action": F.Tensor(shape=(7,), dtype=np.float32),
                    "language_instruction": F.Text(),
                    "label": F.ClassLabel(names=["a", "b", "c"]),
                    "reward": F.Scalar(np.float32),
                    "tokens": F.Sequence(F.Scalar(np.int32)),
                }
            ),
            "episode_metadata": {
                "file_path": F.Text(),
                "ok": F.Scalar(np.bool_),
                "fixed": F.Sequence(F.Tensor(shape=(2,), dtype=np.int64), length=3),
            },
        }
    )


def test_to_json_from_json_roundtrip():
    feat = all_types_features()
    js = json.loads(json.dumps(feat.to_json()))
    names = {"steps/label": ["a", "b", "c"]}
    back = F.from_json(js, names.get)
    assert back.to_json() == js
    assert back == feat
    assert back["steps/label"].names == ["a", "b", "c"]
    assert back["steps/observation/image"].doc == "main camera"
    step = js["featuresDict"]["features"]["steps"]
    assert step["pythonClassName"] == "tensorflow_datasets.core.features.dataset_feature.Dataset"
    assert step["sequence"]["length"] == "-1"
    obs = step["sequence"]["feature"]["featuresDict"]["features"]["observation"]["featuresDict"]["features"]
    assert obs["state"]["tensor"] == {"dtype": "float64", "encoding": "none", "shape": {"dimensions": ["3"]}}
    assert obs["depth"]["image"] == {
        "dtype": "uint16",
        "encodingFormat": "png",
        "shape": {"dimensions": ["8", "10", "1"]},
    }
    scalar = step["sequence"]["feature"]["featuresDict"]["features"]["reward"]
    assert scalar["tensor"]["shape"] == {} and scalar["pythonClassName"].endswith("scalar.Scalar")


def test_describe():
    rows = dict((r[0], r[1:]) for r in all_types_features().describe())
    assert rows["steps/observation/image"] == ("Image", (None, 8, 10, 3), "uint8")
    assert rows["steps/language_instruction"] == ("Text", (None,), "string")
    assert rows["steps/tokens"] == ("Scalar", (None, None), "int32")
    assert rows["episode_metadata/ok"] == ("Scalar", (), "bool")
    assert rows["episode_metadata/fixed"] == ("Tensor", (3, 2), "int64")


def all_types_episode(T: int) -> dict:
    rng = np.random.default_rng(T)
    return {
        "steps": [
            {
                "observation": {
                    "image": camera_like(8, 10, 3, t),
                    "depth": np.full((8, 10, 1), 999, np.uint16),
                    "state": rng.normal(size=3),
                    "zz": np.array([t, 1], np.float32),
                    "dyn": np.ones((t, 2), np.uint8),
                },
                "action": rng.normal(size=7).astype(np.float32),
                "language_instruction": f"do {t}",
                "label": t % 3,
                "reward": float(t),
                "tokens": list(range(t)),
            }
            for t in range(T)
        ],
        "episode_metadata": {"file_path": "/a/b", "ok": True, "fixed": np.arange(6).reshape(3, 2)},
    }


def test_decode_only_some_keys():
    feat = all_types_features()
    flat = parse_example(serialize_example(feat.encode_example(all_types_episode(4))))
    out = feat.decode_example(flat, keys=["steps/action", "steps/observation/state"])
    assert set(out) == {"steps"} and set(out["steps"]) == {"action", "observation"}
    assert set(out["steps"]["observation"]) == {"state"}
    obs = feat.decode_example(flat, keys=["steps/observation"])["steps"]["observation"]
    assert set(obs) == {"image", "depth", "state", "zz", "dyn"}
    assert feat.decode_example(flat, keys="episode_metadata/ok") == {"episode_metadata": {"ok": True}}
    with pytest.raises(FeatureKeyError) as err:
        feat.decode_example(flat, keys=["steps/observation/wrist_image"])
    assert "steps/observation/wrist_image" in str(err.value) and "steps/observation/image" in str(err.value)


def test_num_steps_cheap_and_errors():
    feat = all_types_features()
    flat = parse_example(serialize_example(feat.encode_example(all_types_episode(5))))
    assert feat.num_steps(flat) == 5
    only_images = {"steps/observation/image": flat["steps/observation/image"]}
    assert feat.num_steps(only_images) == 5
    with pytest.raises(FeatureKeyError):
        feat.num_steps(flat, "episode_metadata")


def test_unknown_type_names_type_and_path():
    js = all_types_features().to_json()
    obs = js["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]
    obs["scan"] = {"pythonClassName": "tensorflow_datasets.core.features.lidar.PointCloud", "pointCloud": {}}
    with pytest.raises(UnknownFeatureTypeError) as err:
        F.from_json(js)
    assert "steps/scan" in str(err.value) and "lidar.PointCloud" in str(err.value)
    # a known type with a malformed body names the feature too
    obs["scan"] = {"pythonClassName": "tensorflow_datasets.core.features.audio_feature.Audio", "audio": {}}
    with pytest.raises(UnknownFeatureTypeError, match=r"feature 'steps/scan' \(.*audio_feature.Audio\): unknown dtype"):
        F.from_json(js)


def test_renamed_module_is_accepted():
    js = {
        "pythonClassName": "my_fork.features.FeaturesDict",
        "featuresDict": {
            "features": {
                "x": {
                    "pythonClassName": "other.place.Tensor",
                    "tensor": {"dtype": "int32", "shape": {}, "encoding": "none"},
                }
            }
        },
    }
    feat = F.from_json(js)
    assert isinstance(feat["x"], F.Tensor) and feat["x"].dtype == np.int32


def test_legacy_json_format():
    legacy = {
        "type": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
        "content": {
            "img": {
                "type": "tensorflow_datasets.core.features.image_feature.Image",
                "content": {"shape": [None, None, 3], "dtype": "uint8", "encoding_format": "jpeg"},
            },
            "steps": {
                "type": "tensorflow_datasets.core.features.sequence_feature.Sequence",
                "content": {
                    "feature": {
                        "type": "tensorflow_datasets.core.features.feature.Tensor",
                        "content": {"shape": [2], "dtype": "float32"},
                    },
                    "length": None,
                },
            },
            "label": {
                "type": "tensorflow_datasets.core.features.class_label_feature.ClassLabel",
                "content": {"num_classes": 4},
            },
        },
    }
    feat = F.from_json(legacy)
    assert feat["img"].encoding_format == "jpeg" and feat["img"].shape == (None, None, 3)
    assert feat["steps"].length is None and feat["steps"].feature.shape == (2,)
    assert feat["label"].num_classes == 4


def test_missing_keys_raise_clear_errors():
    feat = all_types_features()
    flat = parse_example(serialize_example(feat.encode_example(all_types_episode(3))))
    broken = dict(flat)
    del broken["episode_metadata/file_path"]
    with pytest.raises(CorruptRecordError, match="episode_metadata/file_path"):
        feat.decode_example(broken)
    broken = dict(flat)
    del broken["steps/reward"]
    with pytest.raises(CorruptRecordError, match="steps/reward"):
        feat.decode_example(broken, keys=["steps/reward"])
    # A per-step key missing from an episode without steps is fine (TFDS's allow_missing).
    empty = parse_example(serialize_example(feat.encode_example(all_types_episode(0))))
    del empty["steps/reward"]
    assert feat.decode_example(empty, keys=["steps/reward"])["steps"]["reward"].shape == (0,)


def test_wrong_value_kind_or_count_is_corrupt():
    feat = F.FeaturesDict({"steps": F.Dataset({"a": F.Tensor(shape=(2,), dtype=np.float32), "b": F.Scalar(np.int64)})})
    flat = parse_example(serialize_example(feat.encode_example({"steps": {"a": np.ones((3, 2)), "b": [1, 2, 3]}})))
    with pytest.raises(CorruptRecordError, match="steps/a"):
        feat.decode_example({**flat, "steps/a": np.arange(5, dtype=np.float32)})
    with pytest.raises(CorruptRecordError, match="steps/b"):
        feat.decode_example({**flat, "steps/b": [b"x", b"y", b"z"]})
    with pytest.raises(CorruptRecordError, match="steps"):
        feat.decode_example({**flat, "steps/b": np.array([1, 2], np.int64)})


def test_encode_validates_input():
    feat = F.FeaturesDict({"a": F.Tensor(shape=(2,), dtype=np.int8), "t": F.Text()})
    with pytest.raises(ValueError, match="shape"):
        feat.encode_example({"a": np.zeros(3, np.int8), "t": ""})
    with pytest.raises(ValueError, match="do not fit"):
        feat.encode_example({"a": np.array([1, 300]), "t": ""})
    with pytest.raises(ValueError, match="without loss"):
        feat.encode_example({"a": np.array([1.5, 2.0]), "t": ""})
    with pytest.raises(ValueError, match="missing key"):
        feat.encode_example({"a": [1, 2]})
    with pytest.raises(ValueError, match="unknown keys"):
        feat.encode_example({"a": [1, 2], "t": "", "extra": 1})
