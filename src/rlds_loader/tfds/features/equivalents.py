"""TFDS feature types whose records hold exactly what basic types hold -> features.json of those basic types.

TFDS stores these types with the same Example keys and values as the basic feature below and decodes them
to the same numpy values, so reading them needs no decoder of its own:

- BBoxFeature: a float32 Tensor of shape (4,) (TFDS's `BBox` tuple is written as those 4 numbers);
- Audio without a file format: a Tensor of its shape, dtype and encoding (encoded audio files need an
  audio decoder: refused);
- LabeledImage: an Image (its label names describe the pixel values only);
- Video: a Sequence of Images, one encoded frame per time step, decoded to [T, H, W, C];
- Translation: a FeaturesDict of one Text per language;
- TranslationVariableLanguages: a FeaturesDict of two Sequences of Text, "language" and "translation".

The basic classes read the result, so the reader reports these features as their basic types.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlds_loader.errors import UnknownFeatureTypeError

_PACKAGE = "tensorflow_datasets.core.features."


def _node(tfds_class: str, field: str, content: dict) -> dict:
    return {"pythonClassName": _PACKAGE + tfds_class, field: content}


def _text() -> dict:
    return _node("text_feature.Text", "text", {})


def _bbox(obj: dict, path: str) -> dict:
    box = obj.get("boundingBox") or {}
    return _node("tensor_feature.Tensor", "tensor", {"shape": box.get("shape") or {"dimensions": ["4"]},
                                                     "dtype": box.get("dtype") or "float32"})


def _audio(obj: dict, path: str) -> dict:
    audio = obj.get("audio") or {}
    if audio.get("fileFormat"):
        raise UnknownFeatureTypeError(f"feature {path!r} is Audio stored as {audio['fileFormat']!r} files, which "
                                      "rlds_loader cannot decode (it reads audio stored as raw samples)")
    return _node("tensor_feature.Tensor", "tensor", {"shape": audio.get("shape"), "dtype": audio.get("dtype", ""),
                                                     "encoding": str(audio.get("encoding") or "none").lower()})


def _labeled_image(obj: dict, path: str) -> dict:
    return _node("image_feature.Image", "image", obj.get("image") or {})


def _video(obj: dict, path: str) -> dict:
    video = dict(obj.get("video") or {})
    dims = list((video.get("shape") or {}).get("dimensions") or [])
    if len(dims) != 4:
        raise UnknownFeatureTypeError(f"feature {path!r}: a Video's shape must have 4 dimensions, got {dims}")
    frame = {"shape": {"dimensions": dims[1:]}, "dtype": video.get("dtype", "uint8"),
             "encodingFormat": video.get("encodingFormat") or "png"}
    return _node("sequence_feature.Sequence", "sequence",
                 {"feature": _node("image_feature.Image", "image", frame), "length": str(dims[0])})


def _translation(obj: dict, path: str) -> dict:
    languages = (obj.get("translation") or {}).get("languages") or []
    return _node("features_dict.FeaturesDict", "featuresDict", {"features": {str(lang): _text() for lang in languages}})


def _translation_variable(obj: dict, path: str) -> dict:
    texts = _node("sequence_feature.Sequence", "sequence", {"feature": _text(), "length": "-1"})
    return _node("features_dict.FeaturesDict", "featuresDict", {"features": {"language": texts, "translation": texts}})


EQUIVALENTS: dict[str, Callable[[dict, str], dict]] = {
    "BBoxFeature": _bbox,
    "Audio": _audio,
    "LabeledImage": _labeled_image,
    "Video": _video,
    "Translation": _translation,
    "TranslationVariableLanguages": _translation_variable,
}


def as_basic(obj: Any, path: str) -> Any:
    """A features.json node -> the node of its basic equivalent (other nodes are returned as they are)."""
    if not isinstance(obj, dict):
        return obj
    convert = EQUIVALENTS.get(str(obj.get("pythonClassName", "")).rsplit(".", 1)[-1])
    if convert is None:
        return obj
    return {**convert(obj, path), **{k: v for k, v in obj.items() if k in ("description", "valueRange")}}
