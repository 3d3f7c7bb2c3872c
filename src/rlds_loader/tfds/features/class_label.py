"""ClassLabel: an int64 class index with optional names; TFDS's class_label_feature.ClassLabel.

features.json holds only `numClasses`; the names live in a text file beside it, one per line, named after
the feature's path with "-" between levels: `steps/label` -> `steps-label.labels.txt` (`labels_file_name`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rlds_loader.errors import UnknownFeatureTypeError
from rlds_loader.tfds.features.tensor import Tensor


def labels_file_name(path: str) -> str:
    """Feature path ("steps/label") -> the name of its labels file ("steps-label.labels.txt")."""
    return "-".join(path.split("/")) + ".labels.txt"


def parse_labels_file(text: str) -> list[str]:
    """Contents of a .labels.txt file -> names (stripped, empty lines dropped, as TFDS reads it)."""
    return [line.strip() for line in text.split("\n") if line.strip()]


class ClassLabel(Tensor):
    """An int64 in [0, num_classes) (TFDS also accepts -1 for "no label")."""

    TFDS_CLASS = "class_label_feature.ClassLabel"
    JSON_FIELD = "classLabel"
    TYPE_NAME = "ClassLabel"

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        names: Sequence[str] | None = None,
        doc: str = "",
        value_range: str = "",
    ):
        super().__init__(shape=(), dtype=np.int64, doc=doc, value_range=value_range)
        if names is not None:
            names = [str(n) for n in names]
            if len(set(names)) != len(names):
                raise UnknownFeatureTypeError(f"ClassLabel names are not unique: {names}")
            if num_classes is not None and num_classes != len(names):
                raise UnknownFeatureTypeError(
                    f"ClassLabel has num_classes={num_classes} but {len(names)} names: {names}"
                )
            num_classes = len(names)
        self.num_classes = num_classes
        self.names: list[str] | None = names
        self._index = {n: i for i, n in enumerate(names)} if names else {}

    def json_content(self) -> dict:
        return {"numClasses": str(self.num_classes)} if self.num_classes else {}

    @classmethod
    def from_json_content(cls, content: dict, names: Sequence[str] | None = None, **doc: str) -> ClassLabel:
        num = int(content.get("numClasses", 0)) or None
        return cls(num_classes=num, names=names, **doc)

    def int2str(self, index: int) -> str:
        return self.names[index] if self.names else str(index)

    def encode_one(self, value: Any) -> dict[str, Any]:
        if self.num_classes is None:
            raise ValueError("ClassLabel without num_classes or names cannot encode")
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if isinstance(value, str):
            if value in self._index:
                value = self._index[value]
            elif not self.names and value.lstrip("-").isdigit():
                value = int(value)
            else:
                raise ValueError(f"unknown class label {value!r}, expected one of {self.names}")
        index = int(value)
        if not -1 <= index < self.num_classes:
            raise ValueError(f"class label {index} is not in [-1, {self.num_classes})")
        return {"": np.int64(index)}
