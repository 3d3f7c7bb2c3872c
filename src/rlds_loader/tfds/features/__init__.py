"""TFDS feature types without TensorFlow: read features.json, decode and encode episodes.

`from_json(features_json)` builds the feature tree; the root `FeaturesDict` then maps a parsed
tf.train.Example to a nested dict of numpy values (`decode_example`) and back (`encode_example`).
One module per feature type, as in TFDS's core/features/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlds_loader.errors import RLDSError, UnknownFeatureTypeError
from rlds_loader.tfds.features.base import FeatureConnector, Leaf
from rlds_loader.tfds.features.class_label import ClassLabel, labels_file_name, parse_labels_file
from rlds_loader.tfds.features.dataset import Dataset
from rlds_loader.tfds.features.equivalents import EQUIVALENTS, as_basic
from rlds_loader.tfds.features.features_dict import FeaturesDict
from rlds_loader.tfds.features.image import EncodedImage, EncodedImages, Image
from rlds_loader.tfds.features.image_codec import decode_image, encode_jpeg, encode_png
from rlds_loader.tfds.features.scalar import Scalar
from rlds_loader.tfds.features.sequence import Sequence
from rlds_loader.tfds.features.tensor import Tensor
from rlds_loader.tfds.features.text import Text

__all__ = [
    "ClassLabel",
    "Dataset",
    "EncodedImage",
    "EncodedImages",
    "FeatureConnector",
    "FeaturesDict",
    "Image",
    "Leaf",
    "Scalar",
    "Sequence",
    "Tensor",
    "Text",
    "decode_image",
    "encode_jpeg",
    "encode_png",
    "from_json",
    "labels_file_name",
    "parse_labels_file",
]

_CLASSES: dict[str, type[FeatureConnector]] = {
    cls.__name__: cls for cls in (FeaturesDict, Dataset, Sequence, Tensor, Scalar, Image, Text, ClassLabel)
}

LabelNames = Callable[[str], "list[str] | None"]


def from_json(obj: dict, label_names: LabelNames | None = None) -> FeatureConnector:
    """features.json (as a dict) -> feature tree.

    The class is chosen by the last part of `pythonClassName` ("...features_dict.FeaturesDict"), so forks
    and moved modules work. `label_names(path)` gives a ClassLabel's names from its labels file (path like
    "steps/label", file name from `labels_file_name`), or None. The legacy {"type", "content"} format of
    old TFDS versions is read too. Any malformed entry is an UnknownFeatureTypeError.
    """
    try:
        return _from_json(obj, (), label_names)
    except RLDSError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError, RecursionError) as e:
        # malformed content (a non-numeric shape, a list where an object belongs, absurd nesting, ...)
        raise UnknownFeatureTypeError(f"features.json is malformed: {type(e).__name__}: {e}") from None


def _from_json(obj: Any, parts: tuple[str, ...], label_names: LabelNames | None) -> FeatureConnector:
    path = "/".join(parts) or "<root>"
    if not isinstance(obj, dict):
        raise UnknownFeatureTypeError(f"feature {path!r}: expected a JSON object, got {type(obj).__name__}")
    if "type" in obj and "content" in obj:
        obj = _from_legacy(obj)
    declared = str(obj.get("pythonClassName", ""))  # before as_basic: what features.json says
    obj = as_basic(obj, path)
    class_name = str(obj.get("pythonClassName", ""))
    cls = _CLASSES.get(class_name.rsplit(".", 1)[-1])
    if cls is None:
        raise UnknownFeatureTypeError(
            f"feature {path!r} has type {class_name or '<missing pythonClassName>'!r}, which rlds_loader "
            f"cannot decode (known types: {', '.join([*_CLASSES, *EQUIVALENTS])})"
        )
    content = obj.get(cls.JSON_FIELD)
    if not isinstance(content, dict):
        raise UnknownFeatureTypeError(f"feature {path!r} ({class_name}) has no {cls.JSON_FIELD!r} entry")
    doc = {"doc": str(obj.get("description", "")), "value_range": str(obj.get("valueRange", ""))}
    if cls is FeaturesDict:
        children = {
            name: _from_json(child, parts + (name,), label_names) for name, child in content.get("features", {}).items()
        }
        return FeaturesDict(children, **doc)
    if cls in (Sequence, Dataset):
        inner = _from_json(content.get("feature"), parts, label_names)
        if cls is Dataset:
            return Dataset(inner, **doc)
        length = int(content.get("length", 0))
        return Sequence(inner, None if length < 0 else length, **doc)
    if cls is ClassLabel:
        names = label_names("/".join(parts)) if label_names else None
        return ClassLabel.from_json_content(content, names=names, **doc)
    try:
        return cls.from_json_content(content, **doc)  # type: ignore[attr-defined]
    except UnknownFeatureTypeError as e:  # e.g. an unknown dtype: say where
        raise UnknownFeatureTypeError(f"feature {path!r} ({declared}): {e}") from None


def _from_legacy(obj: dict) -> dict:
    """Old TFDS `{"type", "content", "proto_cls"}` JSON -> the Feature proto JSON read above."""
    class_name = obj["type"]
    content = obj["content"]
    cls = _CLASSES.get(class_name.rsplit(".", 1)[-1])
    if cls is None or obj.get("proto_cls"):  # content is already the proto JSON of the feature's field
        return {"pythonClassName": class_name, cls.JSON_FIELD if cls else "content": content}

    def dims(shape: Any) -> dict:
        return {"dimensions": [str(-1 if d is None else d) for d in shape]} if shape else {}

    if cls is FeaturesDict:
        body: dict = {"features": {k: _from_legacy(v) for k, v in content.items()}}
    elif cls in (Sequence, Dataset):
        length = content.get("length")
        body = {"feature": _from_legacy(content["feature"]), "length": str(-1 if length is None else length)}
    elif cls is Image:
        body = {
            "shape": dims(content.get("shape")),
            "dtype": content.get("dtype", "uint8"),
            "encodingFormat": content.get("encoding_format") or "",
        }
    elif cls is ClassLabel:
        body = {"numClasses": str(content.get("num_classes") or 0)}
    elif cls is Text:
        body = {}
    else:
        body = {
            "shape": dims(content.get("shape")),
            "dtype": content.get("dtype", ""),
            "encoding": content.get("encoding", "none"),
        }
    return {"pythonClassName": class_name, cls.JSON_FIELD: body}
