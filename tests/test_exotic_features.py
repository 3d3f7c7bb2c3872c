"""TFDS feature types stored as basic ones (BBoxFeature, Audio, LabeledImage, Video, Translation,
TranslationVariableLanguages), at the top level and some inside RLDS steps, written by TFDS: our reader gives
TFDS's values. (TFDS 4.9 cannot write a Video inside steps: no ground truth for that.)"""

from __future__ import annotations

import numpy as np
import pytest
from tfds_builders import assert_same_episode, materialize, write_with_tfds

from rlds_loader.errors import UnknownFeatureTypeError
from rlds_loader.tfds.features import from_json
from rlds_loader.tfds.reader import open_dataset

NAME = "exotic_features"
EXAMPLES = 3


def _frames(i: int, n: int) -> np.ndarray:
    y, x = np.mgrid[0:6, 0:5]
    return np.stack([np.stack([x * 40 + t, y * 30 + i, (x + y + t) % 7 * 30], -1) for t in range(n)]).astype(np.uint8)


def _example(i: int, tfds) -> dict:
    F = tfds.features
    translations = {"en": f"hello {i}", "fr": f"bonjour {i}"} if i % 2 else {"de": "hallo"}
    return {
        "box": F.BBox(0.1 * i, 0.2, 0.3 + 0.1 * i, 0.9),
        "boxes": [F.BBox(0.0, 0.0, 0.5, 0.5)] * i,
        "audio": (np.arange(7 + i) * (1000 * i - 1500)).astype(np.int16),
        "audio_float": np.linspace(-1, 1, 2 * (5 + i)).astype(np.float32).reshape(-1, 2),
        "mask": (np.arange(12).reshape(4, 3, 1) % (i + 2)).astype(np.uint8),
        "video": _frames(i, 2 + i),
        "title": {"en": f"title {i}", "fr": f"titre {i}"},
        "names": translations,
        "steps": [{"mask": _frames(i + t, 1)[0, :, :, :1], "box": F.BBox(0.0, 0.1 * t, 0.5, 0.6)}
                  for t in range(1 + i)],
    }


@pytest.fixture(scope="module")
def exotic(tmp_path_factory):
    import tensorflow_datasets as tfds

    F = tfds.features
    root = str(tmp_path_factory.mktemp("exotic"))
    features = lambda: F.FeaturesDict({  # noqa: E731
        "box": F.BBoxFeature(),
        "boxes": F.Sequence(F.BBoxFeature()),
        "audio": F.Audio(shape=(None,), dtype=np.int16, sample_rate=16000),
        "audio_float": F.Audio(shape=(None, 2), dtype=np.float32, sample_rate=8000),
        "mask": F.LabeledImage(labels=["a", "b", "c", "d"], shape=(4, 3, 1)),
        "video": F.Video(shape=(None, 6, 5, 3)),
        "title": F.Translation(languages=["en", "fr"]),
        "names": F.TranslationVariableLanguages(languages=["de", "en", "fr"]),
        "steps": F.Dataset({"mask": F.LabeledImage(labels=["x", "y"], shape=(6, 5, 1)), "box": F.BBoxFeature()}),
    })
    builder = write_with_tfds(root, NAME, features, lambda: (_example(i, tfds) for i in range(EXAMPLES)))
    theirs = list(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)))
    return root, theirs


def test_exotic_features_read_as_tfds_reads_them(exotic):
    root, theirs = exotic
    ds = open_dataset(root, NAME)
    assert len(theirs) == EXAMPLES
    for i, want in enumerate(theirs):
        ours = materialize(ds.episode("train", i))
        steps = want.pop("steps")
        want["steps"] = {k: np.stack([s[k] for s in steps]) for k in ("mask", "box")}
        assert_same_episode(ours, want, where=f"example {i}")


def test_encoded_audio_files_are_refused_by_name():
    node = {"pythonClassName": "tensorflow_datasets.core.features.audio_feature.Audio",
            "audio": {"dtype": "int16", "fileFormat": "wav", "sampleRate": "16000", "shape": {"dimensions": ["-1"]}}}
    with pytest.raises(UnknownFeatureTypeError, match=r"'sound' is Audio stored as 'wav' files"):
        from_json({"pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
                   "featuresDict": {"features": {"sound": node}}})
